"""Typed readers of environment variables that fail loudly on bad values.

Every variable has a `*_FILE` twin for secrets mounted as files (Kubernetes
Secrets, Docker secrets): `SECRET_KEY_FILE=/run/secrets/key` reads the key from
that file. All variables are listed in `.env.example`.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    file_var = os.environ.get(f"{name}_FILE")
    if file_var:
        try:
            return Path(file_var).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_var}: cannot read: {exc.strerror}") from None
    return os.environ.get(name)


def env_str(name: str, default: str) -> str:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: expected one of 1/0, true/false, yes/no, on/off")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number}: must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number}: must be at most {maximum}")
    return number


def env_float(name: str, default: float) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def cache_from_url(url: str) -> dict[str, object]:
    """Django CACHES['default'] from `redis://host:6379/1`, `file:///path/to/dir` or `locmem://`."""
    from urllib.parse import urlparse

    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss"):
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url, "KEY_PREFIX": "fedsite"}
    # Failure counters must not be culled to make room (the default culls at 300 entries).
    options = {"MAX_ENTRIES": 100_000}
    if scheme == "file":
        path = url[len("file://") :]
        if not path.startswith("/"):
            raise ImproperlyConfigured(f"CACHE_URL={url!r}: expected file:///absolute/path")
        return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": path, "OPTIONS": options}
    if scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "fedsite", "OPTIONS": options}
    raise ImproperlyConfigured(f"CACHE_URL={url!r}: unsupported scheme {scheme!r} (redis://, file:/// or locmem://)")


def database_from_url(url: str, base_dir: Path) -> dict[str, object]:
    """Django DATABASES['default'] from `postgres://user:pass@host:port/name` or `sqlite:///path`."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql", "pgsql"):
        name = parsed.path.lstrip("/")
        if not name:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r}: names no database")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(name),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r}: expected sqlite:///path/to/file")
        p = Path(path)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": p if p.is_absolute() else base_dir / p,
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL={url!r}: unsupported scheme {parsed.scheme!r} (postgres:// or sqlite:///)"
    )
