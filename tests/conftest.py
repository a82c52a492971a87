"""Personas across two workspaces, and API clients for them.

Alice owns acme; Erin is acme's admin, Carol its approver, Dave a member, Bob a
viewer. Charlie owns globex and must see nothing of acme.
"""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.workspaces.choices import Role
from apps.workspaces.models import Membership, Workspace

EXIT_WATCHDOG_S = 120


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread a test leaked must not hang the run at interpreter exit (CI once sat after "N passed").

    If the process is still alive two minutes after pytest is done, every thread's stack goes to stderr and
    the process exits non-zero, so the leak is named instead of timing out silently.
    """
    faulthandler.dump_traceback_later(EXIT_WATCHDOG_S, exit=True, file=sys.stderr)


PERSONAS = {
    "alice": ("acme", Role.OWNER),
    "erin": ("acme", Role.ADMIN),
    "carol": ("acme", Role.APPROVER),
    "dave": ("acme", Role.MEMBER),
    "bob": ("acme", Role.VIEWER),
    "charlie": ("globex", Role.OWNER),
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Failure counters (apps.core.throttle) start at zero in every test."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def workspaces(db):
    acme = Workspace.objects.create(slug="acme", name="Acme Ads")
    globex = Workspace.objects.create(slug="globex", name="Globex Lending")
    return {"acme": acme, "globex": globex}


@pytest.fixture
def users(workspaces):
    User = get_user_model()
    out = {}
    for name, (slug, role) in PERSONAS.items():
        user = User.objects.create_user(username=name, password=f"{name}-password")
        Membership.objects.create(workspace=workspaces[slug], user=user, role=role)
        out[name] = user
    return out


@pytest.fixture
def api(users):
    """api("alice") is an APIClient authenticated with Alice's token; api(None) is anonymous."""

    def make(name: str | None) -> APIClient:
        client = APIClient()
        if name:
            token, _ = Token.objects.get_or_create(user=users[name])
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@pytest.fixture
def data_root(settings, tmp_path) -> Path:
    """Acme's own folder (`<root>/acme/`) under a fresh data root; globex has its folder beside it."""
    root = tmp_path / "data"
    for slug in ("acme", "globex"):
        (root / slug).mkdir(parents=True)
    settings.FEDSITE_DATA_ROOTS = [root.resolve()]
    return (root / "acme").resolve()
