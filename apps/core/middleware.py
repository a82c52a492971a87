"""Probes and runtime reports reach the web inside the cluster, by IP or service name, over plain HTTP.

In production the web redirects plain HTTP to HTTPS (behind the ingress, which terminates TLS and
sets X-Forwarded-Proto) and answers only the public host names. Two kinds of callers never come
through the ingress: the kubelet's probes (`Host: <pod IP>:8000`) and job runtimes posting reports
to the in-cluster Service (`http://fedsite-web.<namespace>.svc:8000`). For those paths only, and only
when the request is addressed by an IP or a cluster-internal name, this middleware lets the request
through the ALLOWED_HOSTS check; SECURE_REDIRECT_EXEMPT (settings) spares the same paths the HTTPS
redirect. Every other path is treated as before.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.http.request import split_domain_port, validate_host

INTERNAL_PATHS = re.compile(r"^/(?:healthz|readyz|api/v1/runtime/jobs/[0-9a-fA-F-]{32,36}/report)$")


def _cluster_suffixes() -> tuple[str, ...]:
    domain = getattr(settings, "FEDSITE_K8S_SERVICE_DOMAIN", "svc").strip(".") or "svc"
    return (".svc", ".svc.cluster.local", f".{domain}")


def is_internal_host(hostname: str) -> bool:
    """An IP literal, localhost, or a Kubernetes Service name (`name.namespace.svc[.cluster.local]`)."""
    if not hostname:
        return False
    try:
        ipaddress.ip_address(hostname.strip("[]"))
        return True
    except ValueError:
        pass
    return hostname == "localhost" or hostname.endswith(_cluster_suffixes())


def internal_endpoint(request: HttpRequest) -> bool:
    """A probe or runtime report addressed inside the cluster (see the module's docstring)."""
    if not INTERNAL_PATHS.match(request.path_info):
        return False
    raw = request.META.get("HTTP_HOST") or request.META.get("SERVER_NAME", "")
    hostname, _port = split_domain_port(raw)
    return is_internal_host(hostname)


class InternalHostsMiddleware:
    """Before SecurityMiddleware: a probe or report addressed by IP or Service name passes the host check.

    The HTTPS redirect skips the same paths through SECURE_REDIRECT_EXEMPT (settings).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if internal_endpoint(request):
            raw = request.META.get("HTTP_HOST") or request.META.get("SERVER_NAME", "")
            hostname, _port = split_domain_port(raw)
            if not validate_host(hostname, settings.ALLOWED_HOSTS):
                # Only this request, only on these paths: the host it was addressed by is accepted as is.
                request.get_host = lambda: raw  # type: ignore[method-assign]
        return self.get_response(request)
