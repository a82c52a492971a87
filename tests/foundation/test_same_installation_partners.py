"""Two workspaces of one installation cannot be partners: a clear refusal at the invitation, on both sides.

Erin (acme's admin) invites; Charlie (globex, same installation) pastes the code.
Before this refusal the accept succeeded and every proposal then stayed
"proposed" forever.
"""

from __future__ import annotations

import grpc
import pytest

from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from apps.partners.models import Partner
from apps.peer import identity
from apps.peer.envelope import handshake_signing_bytes
from apps.peer.handshake import accept_invitation, answer_handshake, create_invitation, decode_code
from apps.peer.inbox import PeerRejected
from apps.peer.models import Invitation
from tests.foundation.test_invitations import handshake_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def peer_identity(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.FEDSITE_CLOCK_SKEW_S = 300


def test_accepting_an_invitation_of_the_same_installation_is_refused_clearly(workspaces, users):
    _, code = create_invitation(workspaces["acme"], acting_user=users["erin"])

    with pytest.raises(ServiceError) as info:
        accept_invitation(workspaces["globex"], code, acting_user=users["charlie"])

    assert info.value.field == "code"
    assert "workspace acme of this same installation" in info.value.message
    assert "cannot be partners" in info.value.message
    assert not Partner.objects.exists()
    failed = AuditEvent.objects.get(verb="partner.accept_failed")
    assert failed.workspace == workspaces["globex"] and "same installation" in failed.data["error"]


def test_the_api_answers_400_with_the_reason(api, workspaces, users):
    _, code = create_invitation(workspaces["acme"], acting_user=users["erin"])
    r = api("charlie").post("/api/v1/workspaces/globex/partners/accept/", {"code": code}, format="json")
    assert r.status_code == 400, r.content
    assert "same installation" in r.json()["code"][0]
    assert not Partner.objects.exists()


def test_the_inviting_side_refuses_a_handshake_from_its_own_installation(workspaces):
    """An acceptor that skipped its own check (an older version) is refused by the inviter too."""
    invitation, code = create_invitation(workspaces["acme"])
    body = decode_code(code)
    req = handshake_request(invitation, body)
    req.ca_pem = identity.ensure_identity().ca_pem  # signed by this installation's own CA
    key = identity.workspace_private_key(workspaces["globex"])
    req.workspace_public_key = identity.workspace_public_key(workspaces["globex"])
    req.signature = key.sign(handshake_signing_bytes(req))

    with pytest.raises(PeerRejected) as info:
        answer_handshake(req, body["enrollment_cert"].encode())

    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and info.value.reason == "same_installation"
    assert not Partner.objects.exists()
    assert Invitation.objects.get(pk=invitation.pk).used_at is None
