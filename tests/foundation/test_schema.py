"""The OpenAPI schema is valid, and a schemathesis run against it finds no 500."""

import os

import pytest
import schemathesis
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings

from apps.workspaces.models import Membership, Workspace

pytestmark = pytest.mark.django_db


def test_manage_py_spectacular_writes_a_schema(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    text = out.read_text()
    for path in (
        "/api/v1/workspaces/{workspace_slug}/tickets/{id}/approve/",
        "/api/v1/workspaces/{workspace_slug}/jobs/{id}/cancel/",
        "/api/v1/workspaces/{workspace_slug}/audit-events/",
    ):
        assert path in text


def test_the_docs_page_is_served(client):
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/schema/").status_code == 200


@pytest.fixture
def fuzz_token(db, django_user_model):
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("fuzzer", password="x")
    ws = Workspace.objects.create(slug="acme", name="Acme")
    Membership.objects.create(workspace=ws, user=user, role="owner")
    return Token.objects.create(user=user).key


def test_schemathesis_finds_no_server_error(fuzz_token, settings_data_root):
    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    # As Django's test client does: the test's transaction must outlive each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        _fuzz(fuzz_token, get_wsgi_application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _fuzz(fuzz_token, get_wsgi_application):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    failures: list[str] = []
    calls: list[int] = []

    @settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "6")),
        derandomize=not os.environ.get("FUZZ_RANDOM"),  # CI is repeatable; FUZZ_RANDOM=1 explores
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case):
        case.path_parameters = (
            {**(case.path_parameters or {}), "workspace_slug": "acme"}
            if "workspace_slug" in (case.path_parameters or {})
            else case.path_parameters
        )
        response = case.call(headers={"Authorization": f"Token {fuzz_token}"})
        calls.append(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

    for result in schema.get_all_operations():
        operation = result.ok()
        given(case=operation.as_strategy())(run)()
    assert not failures, "\n".join(failures)
    assert len(calls) > 50, "schemathesis generated too few requests to mean anything"
    assert any(code < 300 for code in calls) and any(400 <= code < 500 for code in calls)


@pytest.fixture
def settings_data_root(settings, tmp_path):
    settings.FEDSITE_DATA_ROOTS = [tmp_path.resolve()]
    return tmp_path
