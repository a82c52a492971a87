"""Guessing passwords or tokens is throttled: the N+1st failure within the window is refused with 429.

Mallory guesses; Alice (acme's owner) is who she guesses at. The counters live in
the Django cache (Redis in production), so every web process shares them.
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db
LIMIT = 3


@pytest.fixture(autouse=True)
def small_limits(settings):
    settings.FEDSITE_LOGIN_FAILURE_LIMIT = LIMIT
    settings.FEDSITE_TOKEN_FAILURE_LIMIT = LIMIT
    settings.FEDSITE_AUTH_FAILURE_WINDOW_S = 300


def post_login(client: Client, url: str, password: str, username: str = "alice", addr: str = "10.0.0.7"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=addr)


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"], ids=["dashboard", "admin"])
def test_the_login_after_the_limit_is_refused_even_with_the_right_password(users, url):
    users["alice"].is_staff = True
    users["alice"].save()
    client = Client()
    for _ in range(LIMIT):
        assert post_login(client, url, "wrong").status_code == 200  # the form again, with its error
    locked = post_login(client, url, "alice-password")
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode() and int(locked["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    # Another address is not locked out by this one's guesses.
    assert post_login(Client(), url, "alice-password", addr="10.0.0.8").status_code == 302


def test_a_good_login_below_the_limit_works_and_the_page_still_loads_when_locked(users):
    client = Client()
    assert post_login(client, "/accounts/login/", "wrong").status_code == 200
    assert post_login(client, "/accounts/login/", "alice-password").status_code == 302
    for _ in range(LIMIT):
        post_login(Client(), "/accounts/login/", "wrong", addr="10.0.0.9")
    assert Client().get("/accounts/login/", REMOTE_ADDR="10.0.0.9").status_code == 200


def test_one_username_guessed_from_many_addresses_is_locked_too(users):
    for i in range(LIMIT * 5):
        post_login(Client(), "/accounts/login/", "wrong", addr=f"10.1.0.{i}")
    assert post_login(Client(), "/accounts/login/", "alice-password", addr="10.2.0.1").status_code == 429
    assert post_login(Client(), "/accounts/login/", "bob-password", username="bob", addr="10.2.0.1").status_code == 302


def test_wrong_tokens_past_the_limit_get_429_even_for_a_good_token(users):
    good = Token.objects.create(user=users["alice"]).key
    client = APIClient(REMOTE_ADDR="10.0.0.7")
    for i in range(LIMIT):
        r = client.get("/api/v1/workspaces/", HTTP_AUTHORIZATION=f"Token {i:040x}")
        assert r.status_code == 401
    r = client.get("/api/v1/workspaces/", HTTP_AUTHORIZATION=f"Token {good}")
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert "Too many wrong tokens" in r.json()["detail"]
    assert (
        APIClient(REMOTE_ADDR="10.0.0.8").get("/api/v1/workspaces/", HTTP_AUTHORIZATION=f"Token {good}").status_code
        == 200
    )


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(users, settings):
    settings.FEDSITE_TRUSTED_PROXIES = 1
    for _ in range(LIMIT):
        Client().post(
            "/accounts/login/",
            {"username": "x", "password": "y"},
            REMOTE_ADDR="10.9.9.9",
            HTTP_X_FORWARDED_FOR="1.2.3.4",
        )
    proxied = {"REMOTE_ADDR": "10.9.9.9"}
    locked = Client().post(
        "/accounts/login/",
        {"username": "alice", "password": "alice-password"},
        HTTP_X_FORWARDED_FOR="1.2.3.4",
        **proxied,
    )
    assert locked.status_code == 429
    other = Client().post(
        "/accounts/login/",
        {"username": "alice", "password": "alice-password"},
        HTTP_X_FORWARDED_FOR="5.6.7.8",
        **proxied,
    )
    assert other.status_code == 302


def test_the_counters_work_on_redis_as_in_production(users, settings):
    """CACHE_URL=redis://… (production): the same limit, counted in Redis."""
    import os
    import uuid

    import redis

    from fedsite.env import cache_from_url

    url = os.environ.get("FEDSITE_TEST_BROKER_URL") or "redis://127.0.0.1:6379/1"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis at {url}")
    settings.CACHES = {"default": {**cache_from_url(url), "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    from django.core.cache import caches

    assert type(caches["default"]).__name__ == "RedisCache"
    for _ in range(LIMIT):
        assert post_login(Client(), "/accounts/login/", "wrong").status_code == 200
    assert post_login(Client(), "/accounts/login/", "alice-password").status_code == 429
    # No cache.clear(): on Redis it would flush the whole database; the keys expire with their window.
