"""System checks of this installation's settings (`manage.py check`, `check --deploy`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from fedsite.secret_key import GENERATE, secret_key_weakness


@register(Tags.security, deploy=True)
def check_secret_key(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A weak SECRET_KEY fails `check --deploy` (Django itself only warns, security.W009)."""
    weakness = secret_key_weakness(str(settings.SECRET_KEY or ""))
    if weakness is None:
        return []
    return [
        Error(
            f"SECRET_KEY is weak: {weakness}.",
            hint=f"Set SECRET_KEY (or SECRET_KEY_FILE) to a generated key: {GENERATE}",
            id="fedsite.E001",
        )
    ]
