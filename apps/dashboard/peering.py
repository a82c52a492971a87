"""The dashboard's door to the partnership handshake (apps.peer.handshake, issue 3).

The handshake module belongs to the peer service; until it is installed the
Partners page says so instead of offering invitations.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any


def handshake() -> ModuleType | None:
    try:
        return importlib.import_module("apps.peer.handshake")
    except ImportError:
        return None


def available() -> bool:
    hs = handshake()
    return hs is not None and hasattr(hs, "create_invitation") and hasattr(hs, "accept_invitation")


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Pass only the keyword arguments the service function takes."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def create_invitation(workspace: Any, *, name: str, acting_user: Any) -> Any:
    hs = handshake()
    assert hs is not None
    return _call(hs.create_invitation, workspace, name=name, acting_user=acting_user, source="ui")


def accept_invitation(workspace: Any, *, code: str, name: str, acting_user: Any) -> Any:
    hs = handshake()
    assert hs is not None
    return _call(hs.accept_invitation, workspace, code=code, name=name, acting_user=acting_user, source="ui")
