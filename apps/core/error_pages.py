"""Error answers outside DRF's views: JSON under /api/ (a client never parses an HTML page), HTML elsewhere.

DRF's exception handler (apps.core.drf) answers what API views raise; these handlers answer what
Django itself raises -- an unknown URL, an error in a middleware, an uncaught exception -- so every
answer under /api/, 500 included, is JSON.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

API_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "bad request", "code": "bad_request"}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "permission denied", "code": "permission_denied"}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "not found", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": "internal error; it has been logged for the operator", "code": "internal_error"}, status=500
        )
    return defaults.server_error(request)
