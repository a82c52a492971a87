"""A partner's outage, seen and recovered from, between two real installations.

While Beta's peer service is down, Alpha's API says its messages do not reach Beta
(though Beta's heartbeats still reach Alpha), the ticket says it is not yet
delivered, and Beta's doctor says its own peer service is not answering. When Beta
comes back, what Alpha held for it arrives within 5 s, even though Alpha's backoff
had grown to an hour.
"""

from __future__ import annotations

import time

import pytest

from tests.live import Side, wait_peer_port
from tests.peer.conftest import Partnership
from tests.peer.test_two_installations import propose, shell, ticket_status

pytestmark = pytest.mark.peer

RECOVERY_S = 5.0


def test_pending_messages_reach_a_returning_partner_within_5_s_whatever_the_backoff(
    partnership: Partnership, alpha: Side, beta: Side
) -> None:
    pid = partnership.alpha_partner["id"]
    beta.inst.stop_process("peer")
    try:
        # given Alpha proposes while Beta's peer service is down
        ticket = propose(alpha, partnership, name="while beta is down")
        assert alpha.get(f"tickets/{ticket['id']}/")["undelivered_messages"] >= 1
        # (more tickets: lanes never tried wait behind the failed one's backoff)
        others = [propose(alpha, partnership, name=f"also while beta is down {i}") for i in range(3)]
        # then Alpha sees that its messages do not reach Beta
        # (the failed attempt and the partner's last error are written one after the other: wait for both)
        partner = alpha.wait(
            f"partners/{pid}/", lambda p: p["failing_messages"] >= 1 and bool(p["last_error"]), timeout=30
        )
        assert partner["reachable"] is False and partner["pending_messages"] >= 1
        assert partner["undelivered_since"] and "UNAVAILABLE" in partner["last_error"]
        # and Beta's doctor says its own peer service is not answering
        doctor = beta.inst.manage("doctor", check=False)
        assert doctor.returncode != 0 and "peer service" in doctor.stdout and "not answering" in doctor.stdout
        # the outage has lasted long enough for the backoff to reach an hour
        held = shell(
            alpha,
            "import json, datetime as dt\nfrom django.utils import timezone\n"
            "from apps.peer.models import OutboxMessage\n"
            f"q = OutboxMessage.objects.filter(partner_id='{pid}', status='pending')\n"
            "print(json.dumps(q.update(attempts=12, next_attempt_at=timezone.now() + dt.timedelta(hours=1))))",
        )
        assert held >= 1
    finally:
        beta.inst.start(("peer",))
    # when Beta's peer service is back
    wait_peer_port(beta.inst, timeout=60)
    back = time.monotonic()
    # then every proposal reaches Beta within seconds, not in an hour
    for t in [ticket, *others]:
        while ticket_status(beta, t["id"]) is None:
            assert time.monotonic() - back < 30, "a proposal never arrived"
            time.sleep(0.05)
    took = time.monotonic() - back
    print(f"delivered {took:.2f} s after the partner came back")
    assert took < RECOVERY_S, f"delivered {took:.1f} s after the partner came back"
    alpha.wait(f"tickets/{ticket['id']}/", lambda t: t["undelivered_messages"] == 0, timeout=10)
    partner = alpha.wait(f"partners/{pid}/", lambda p: p["reachable"], timeout=10)
    assert partner["pending_messages"] == 0
    assert "all checks passed" in beta.inst.manage("doctor").stdout
