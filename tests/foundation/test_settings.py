"""Settings helpers fail loudly on bad values and switch databases by URL."""

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from fedsite import env


def test_it_reads_booleans_and_refuses_nonsense(monkeypatch):
    monkeypatch.setenv("X_FLAG", "yes")
    assert env.env_bool("X_FLAG", False) is True
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG='maybe'"):
        env.env_bool("X_FLAG", False)


def test_it_refuses_an_integer_below_the_minimum(monkeypatch):
    monkeypatch.setenv("X_INT", "-3")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env.env_int("X_INT", 1, minimum=0)
    monkeypatch.setenv("X_INT", "25")
    with pytest.raises(ImproperlyConfigured, match="X_INT=25: must be at most 19"):
        env.env_int("X_INT", 1, minimum=0, maximum=19)
    monkeypatch.setenv("X_INT", "ten")
    with pytest.raises(ImproperlyConfigured, match="expected an integer"):
        env.env_int("X_INT", 1)


def test_it_reads_secrets_from_file_variants(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env.env_str("X_SECRET", "default") == "s3cret"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot read"):
        env.env_str("X_SECRET", "default")


def test_it_refuses_a_choice_outside_the_list(monkeypatch):
    monkeypatch.setenv("FEDSITE_LAUNCHER", "docker")
    with pytest.raises(ImproperlyConfigured, match="local, kubernetes"):
        env.env_choice("FEDSITE_LAUNCHER", "local", ("local", "kubernetes"))


def test_database_urls_select_postgres_or_sqlite():
    pg = env.database_from_url("postgres://u:p%40ss@db.internal:6543/fedsite", Path("/srv"))
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "fedsite",
        "u",
        "p@ss",
        "db.internal",
        "6543",
    )
    lite = env.database_from_url("sqlite:///var/db.sqlite3", Path("/srv"))
    assert lite["NAME"] == Path("/srv/var/db.sqlite3")
    with pytest.raises(ImproperlyConfigured, match="unsupported scheme"):
        env.database_from_url("mysql://x/y", Path("/srv"))
