"""Signing in, throttled: the dashboard and admin login views and API token authentication.

Wrong passwords and wrong tokens are counted per client address (and passwords
per username too) in the cache; past the limit every attempt is refused with
429 until the window ends. See apps.core.throttle.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render
from drf_spectacular.authentication import TokenScheme
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header

from apps.core.throttle import USERNAME_FACTOR, client_ip, login_throttle, minutes, token_throttle


def throttled_login(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Wrap a login view (Django's LoginView, the admin's login): count failed POSTs, refuse past the limit."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        throttle = login_throttle()
        username = str(request.POST.get("username", ""))[:150].strip().lower()
        idents = [("ip", client_ip(request)), ("user", username)]
        wait = throttle.retry_after(*idents, limits={"user": throttle.limit * USERNAME_FACTOR})
        if wait:
            locked = render(request, "registration/locked_out.html", {"wait": minutes(wait)}, status=429)
            locked["Retry-After"] = str(wait)
            return locked
        response = view(request, *args, **kwargs)
        if response.status_code in (301, 302, 303) and request.user.is_authenticated:
            throttle.clear("user", username)  # the address keeps its count: a good login must not reset a guesser's
        else:
            throttle.fail(*idents)
        return response

    return wrapper


class ThrottledTokenAuthentication(TokenAuthentication):
    """`Authorization: Token …`, with wrong tokens counted per client address and refused (429) past the limit."""

    def authenticate(self, request: Any) -> Any:
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() != self.keyword.lower().encode():
            return None
        throttle = token_throttle()
        ident = ("ip", client_ip(request))
        wait = throttle.retry_after(ident)
        if wait:
            raise exceptions.Throttled(
                wait=wait, detail=f"Too many wrong tokens from this address; try again in {minutes(wait)}."
            )
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            throttle.fail(ident)
            raise


class ThrottledTokenScheme(TokenScheme):
    """The schema's `tokenAuth` for it (drf-spectacular knows only the class it subclasses)."""

    target_class = "apps.core.auth.ThrottledTokenAuthentication"
