"""Production headers and keys: the Content-Security-Policy on every page, and no weak SECRET_KEY.

The browser tour (tests/browser/test_tour.py) checks that every page, Chart.js,
the admin and the API docs work under the policy, with no violation reported.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from fedsite.secret_key import secret_key_weakness

ROOT = Path(__file__).resolve().parents[2]
WEAK = ["short-key", "django-insecure-" + secrets.token_urlsafe(40), "a" * 64, "abcdefghij" * 6,
        "changeme-" + secrets.token_hex(24), secrets.token_hex(16) * 2, "0123456789" + secrets.token_hex(25)]  # fmt: skip


@pytest.mark.parametrize("key", WEAK, ids=["short", "django-insecure", "one-char", "repeated", "placeholder",
                                            "doubled", "run"])  # fmt: skip
def test_weak_keys_are_recognised(key):
    assert secret_key_weakness(key)


def test_generated_keys_pass():
    for _ in range(200):
        assert secret_key_weakness(secrets.token_urlsafe(64)) is None
        assert secret_key_weakness(secrets.token_hex(32)) is None


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_KEY", "FEDSITE_", "DJANGO_"))}
    clean.update(DJANGO_SETTINGS_MODULE="fedsite.settings", FEDSITE_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_to_start_with_a_weak_key_and_starts_with_a_strong_one(tmp_path):
    weak = manage(tmp_path, "check", FEDSITE_ENV="production", SECRET_KEY="abcdefghij" * 6)
    assert weak.returncode != 0
    assert "SECRET_KEY is weak: it repeats a stretch of 8 characters" in weak.stderr
    assert "abcdefghij" not in weak.stderr  # the key itself never lands in a log
    strong = manage(tmp_path, "check", "--deploy", FEDSITE_ENV="production", SECRET_KEY=secrets.token_urlsafe(64))
    assert strong.returncode == 0, strong.stderr
    assert "fedsite.E001" not in strong.stdout + strong.stderr


def test_check_deploy_fails_on_a_weak_key(settings, monkeypatch):
    # The browser tests' session fixture sets this for Playwright; the deploy check rightly refuses it.
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
    settings.SECRET_KEY = "changeme-please-" + "x1y2z3" * 7
    with pytest.raises(SystemCheckError, match="fedsite.E001"):
        call_command("check", deploy=True)
    call_command("check")  # development runs; only the deploy check refuses it
    settings.SECRET_KEY = secrets.token_urlsafe(64)
    call_command("check", deploy=True, fail_level="ERROR")


@pytest.mark.django_db
def test_every_page_carries_the_content_security_policy(client, users):
    for path in ("/accounts/login/", "/admin/login/", "/api/docs/", "/healthz"):
        policy = client.get(path)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, path
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    client.login(username="alice", password="alice-password")
    assert "object-src 'none'" in client.get("/w/acme/")["Content-Security-Policy"]


@pytest.mark.django_db
def test_no_page_relies_on_an_inline_script_or_style(client, users):
    """What the policy would refuse: <script> without src, <style>, style="…" attributes (swagger's too)."""
    import re

    client.login(username="alice", password="alice-password")
    for path in ("/w/acme/", "/w/acme/members/", "/w/acme/datasets/new", "/api/docs/", "/accounts/login/"):
        html = client.get(path).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", html), path
        assert "<style" not in html and ' style="' not in html, path
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
