"""Probes and runtime reports inside the cluster under production's HTTPS redirect and host checks (unit level;
tests/kubernetes/test_production_web.py runs the same behind a real TLS proxy)."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from apps.core.middleware import is_internal_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def production(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["fedsite.example.com"]
    return Client(raise_request_exception=False)


@pytest.mark.parametrize(
    ("host", "internal"),
    [("10.244.1.7", True), ("[fd00::7]", True), ("localhost", True), ("fedsite-web.fedsite.svc", True),
     ("fedsite-web.fedsite.svc.cluster.local", True), ("fedsite.example.com", False), ("svc.evil.net", False),
     ("evilsvc", False), ("", False)],
)  # fmt: skip
def test_which_hosts_are_inside_the_cluster(host, internal):
    assert is_internal_host(host) is internal


def test_probes_and_reports_by_ip_or_service_name_are_neither_redirected_nor_refused(production):
    assert production.get("/healthz", HTTP_HOST="10.244.1.7:8000").status_code == 200
    report = f"/api/v1/runtime/jobs/{uuid.uuid4()}/report"
    r = production.post(
        report, {"events": []}, content_type="application/json", HTTP_HOST="fedsite-web.fedsite.svc:8000"
    )
    assert r.status_code == 401  # the view answered: no redirect, no host refusal


def test_every_other_request_keeps_productions_rules(production):
    r = production.get("/api/v1/workspaces/", HTTP_HOST="10.244.1.7:8000")
    assert r.status_code == 400 and r["Content-Type"] == "application/json"  # host refused, as JSON under /api/
    assert production.get("/healthz", HTTP_HOST="evil.example.net").status_code == 400
    r = production.get("/api/v1/workspaces/", HTTP_HOST="fedsite.example.com")
    assert r.status_code == 301 and r["Location"] == "https://fedsite.example.com/api/v1/workspaces/"
    r = production.get("/api/v1/workspaces/", HTTP_HOST="fedsite.example.com", HTTP_X_FORWARDED_PROTO="https")
    assert r.status_code in (401, 403)  # behind the ingress: HTTPS, so not redirected
