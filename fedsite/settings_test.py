"""Settings for the test suite: the real settings, with test-only defaults.

DATABASE_URL still decides the database (PostgreSQL in CI, SQLite otherwise).
"""

import os
from pathlib import Path

os.environ.setdefault("FEDSITE_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
os.environ.setdefault("CELERY_BROKER_URL", "memory://")
os.environ.setdefault("FEDSITE_ENV", "test")
os.environ.setdefault("CACHE_URL", "locmem://")  # cleared before each test (tests/conftest.py)

from fedsite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
