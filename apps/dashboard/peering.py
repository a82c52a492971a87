"""The dashboard's door to the partnership handshake (apps.peer.handshake, the peer service's).

Kept in one place so the Partners page still renders (without invitations) on
an installation whose peer service is missing.
"""

from __future__ import annotations

from typing import Any

from apps.partners.models import Partner


def available() -> bool:
    try:
        import apps.peer.handshake  # noqa: F401
    except ImportError:
        return False
    return True


def create_invitation(workspace: Any, *, acting_user: Any) -> tuple[Any, str]:
    """(invitation, one-time code) — the code carries our endpoint, CA and a secret."""
    from apps.peer.handshake import create_invitation as create

    return create(workspace, acting_user=acting_user, source="ui")


def accept_invitation(workspace: Any, *, code: str, name: str, acting_user: Any) -> Partner:
    from apps.peer.handshake import accept_invitation as accept

    return accept(workspace, code, name=name, acting_user=acting_user, source="ui")


def revoke_invitation(invitation: Any, *, acting_user: Any) -> Any:
    from apps.peer.handshake import revoke_invitation as revoke

    return revoke(invitation, acting_user=acting_user, source="ui")
