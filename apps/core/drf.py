"""DRF settings hooks (kept apart from apps.core.api, which imports viewsets, to avoid an import cycle)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError
from django.db.models import ProtectedError
from rest_framework import pagination, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.errors import ServiceError

log = logging.getLogger(__name__)


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Service errors become 400/403/409 with the message; protected deletes become 409."""
    if isinstance(exc, ServiceError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, ProtectedError):
        return Response(
            {"detail": "it is still in use (by tickets, jobs or model versions)", "code": "protected"},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, IntegrityError):
        # A uniqueness race the service's own check could not see (two requests at once): the
        # services turn the ones they expect into a named ServiceError; anything else is a conflict.
        log.warning("integrity error answered as 409: %s", exc)
        return Response(
            {"detail": "this conflicts with a change made at the same time; reload and try again", "code": "conflict"},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)
