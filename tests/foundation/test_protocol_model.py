"""A model-based test of the two-party negotiation protocol (hypothesis stateful).

Two installations, alpha and beta, live in this one test database as two
workspaces partnered with each other. Everything each side does goes through
its real service layer (propose, approve, reject, withdraw, cancel, retry, the
runtime's reports), and every peer message goes through the real sending code
(`apps.peer.delivery._send`: envelope, answer handling, refusal and
reconciliation) and the real receiving code (`apps.peer.inbox.accept`:
exactly-once inbox, dispatch, services). Only the wire is simulated: the test
is the network, and it delivers whatever message it likes next — any ticket's
oldest pending message, in either direction (the sender keeps each ticket's
messages in order; nothing else is ordered) — and may drop it (the sender
retries later) or lose its acknowledgement after the receiver applied it (the
sender sends it again: a duplicate).

A ticket and its jobs carry the same UUID on both real installations; here
they share one table, so the wire maps ids between the two sides (beta's copy
of ticket t is `t XOR MASK`, and job ids follow from ticket id and attempt).

After the random steps comes quiescence: every pending message is delivered,
every launched runtime ends (jointly successful if both sides' runtimes ran,
else failed as a runtime whose partner never came), until nothing moves. Then
both sides must agree on every ticket's and every job's status, and no job may
have run for a ticket that was not approved.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from typing import Any

import grpc
import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from apps.core.errors import ServiceError
from apps.datasets.models import Dataset, DatasetGrant, RemoteDataset
from apps.jobs.choices import ACTIVE, JobStatus
from apps.jobs.models import Job
from apps.jobs.services import cancel_job, job_id_for, retry_job, set_job_status
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer import client, delivery, inbox
from apps.peer.models import OutboxMessage, OutboxStatus
from apps.tickets.choices import JobKind, TicketStatus
from apps.tickets.models import Ticket
from apps.tickets.services import approve_ticket, expire_ticket, propose_ticket, reject_ticket, withdraw_ticket
from apps.workspaces.models import Workspace
from fedsite_proto.peer.v1 import peer_pb2

pytestmark = pytest.mark.django_db

MASK = uuid.UUID("5a5a5a5a-0000-4000-8000-00000000a5a5").int
J, S = JobStatus, TicketStatus
SIDES = ("alpha", "beta")
NOT_APPROVED = (S.PROPOSED, S.PENDING, S.REJECTED, S.WITHDRAWN, S.EXPIRED, S.DRAFT)


def other(side: str) -> str:
    return "beta" if side == "alpha" else "alpha"


def mirror(ticket_id: Any) -> uuid.UUID:
    """The other side's id of the same ticket (an involution)."""
    return uuid.UUID(int=uuid.UUID(str(ticket_id)).int ^ MASK)


class WireError(grpc.RpcError):
    """What the sender sees when a call fails: a status, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str = "", trailers: tuple = ()) -> None:
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailers


def _translate_ids(value: Any) -> Any:
    """Map the ids in a payload (or an answer's state) to the other side's."""
    if isinstance(value, list):
        return [_translate_ids(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _translate_ids(v) for k, v in value.items()}
    if out.get("ticket_id"):
        tid = mirror(out["ticket_id"])
        out["ticket_id"] = str(tid)
        if isinstance(out.get("attempt"), int):
            if out.get("job_id"):
                out["job_id"] = str(job_id_for(tid, out["attempt"]))
            if out.get("previous_job_id"):
                out["previous_job_id"] = str(job_id_for(tid, out["attempt"] - 1))
        for job in out.get("jobs") or []:
            if isinstance(job, dict) and isinstance(job.get("attempt"), int):
                job["job_id"] = str(job_id_for(tid, job["attempt"]))
    return out


class Network:
    """The simulated wire between the two workspaces; `fault` is set per delivery by the test."""

    def __init__(self, world: dict[str, Any]) -> None:
        self.world = world
        self.fault = "ok"

    def deliver(self, partner: Partner, envelope: peer_pb2.Envelope, *, timeout: float = 0) -> peer_pb2.Ack:
        if self.fault == "drop":
            raise WireError(grpc.StatusCode.UNAVAILABLE, "connection reset (simulated)")
        sender = "alpha" if partner.workspace_id == self.world["alpha"].id else "beta"
        receiver = other(sender)
        payload = _translate_ids(json.loads(envelope.payload.decode()))
        env = peer_pb2.Envelope()
        env.CopyFrom(envelope)
        env.payload = json.dumps(payload).encode()
        env.sender_workspace_id = str(self.world[sender].id)
        env.receiver_workspace_id = str(self.world[receiver].id)
        if env.ticket_id:
            env.ticket_id = str(mirror(env.ticket_id))
        try:
            with transaction.atomic():
                ack = inbox.accept(env, self.world[receiver], self.world[f"{receiver}_partner"])
        except inbox.PeerRejected as exc:
            trailers = tuple((k, _translate_state(k, v)) for k, v in getattr(exc, "trailers", ()))
            raise WireError(exc.code, exc.message, trailers) from None
        if self.fault == "ack_lost":
            raise WireError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded (simulated)")
        _translate_ack(ack)
        return ack


def _translate_state(key: str, value: Any) -> Any:
    if not key.endswith("-bin"):
        return value
    state = peer_pb2.TicketState.FromString(value)
    _translate_state_message(state)
    return state.SerializeToString()


def _translate_state_message(state: Any) -> None:
    if not state.ticket_id:
        return
    tid = mirror(state.ticket_id)
    state.ticket_id = str(tid)
    for job in state.jobs:
        job.job_id = str(job_id_for(tid, job.attempt))


def _translate_ack(ack: peer_pb2.Ack) -> None:
    if "state" in ack.DESCRIPTOR.fields_by_name and ack.HasField("state"):
        _translate_state_message(ack.state)


class Protocol(RuleBasedStateMachine):
    """Both sides' service layers plus the wire; `world` is set by the test before running."""

    world: dict[str, Any] = {}
    network: Network

    def __init__(self) -> None:
        super().__init__()
        # Each example runs in a savepoint that is rolled back at the end (no commit, so no
        # on-commit Celery pushes or launches: the test delivers and launches by hand).
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.tickets: list[uuid.UUID] = []  # alpha-side ids (beta's copy is mirror(id))
        self.launched: set[tuple[str, uuid.UUID]] = set()  # (side, alpha-side job id)
        self.ended: dict[tuple[str, uuid.UUID], bool] = {}  # whose runtime ended, and whether it succeeded

    # -- helpers ---------------------------------------------------------------------------

    def ticket_on(self, side: str, i: int) -> Ticket | None:
        if not self.tickets:
            return None
        tid = self.tickets[i % len(self.tickets)]
        return Ticket.objects.filter(pk=tid if side == "alpha" else mirror(tid)).first()

    def job_on(self, side: str, i: int, attempt_back: int = 0) -> Job | None:
        ticket = self.ticket_on(side, i)
        if ticket is None:
            return None
        jobs = list(ticket.jobs.order_by("-attempt"))
        return jobs[min(attempt_back, len(jobs) - 1)] if jobs else None

    def canonical_job(self, side: str, job: Job) -> uuid.UUID:
        tid = job.ticket_id if side == "alpha" else mirror(job.ticket_id)
        return job_id_for(tid, job.attempt)

    def lane_heads(self, side: str) -> list[OutboxMessage]:
        """Each ticket's oldest pending message from `side` (what the sender may send next)."""
        heads: dict[Any, OutboxMessage] = {}
        for m in OutboxMessage.objects.filter(
            partner=self.world[f"{side}_partner"], status=OutboxStatus.PENDING
        ).order_by("seq"):
            heads.setdefault(m.ticket_id, m)
        return list(heads.values())

    def send(self, side: str, message: OutboxMessage, fault: str) -> None:
        self.network.fault = fault
        try:
            delivery._send(self.world[f"{side}_partner"], message)
        finally:
            self.network.fault = "ok"

    @staticmethod
    def attempt(fn: Any, *args: Any, **kw: Any) -> None:
        """A user's action; refused ones (wrong state, wrong side) change nothing."""
        try:
            with transaction.atomic():
                fn(*args, **kw)
        except ServiceError:
            pass

    # -- rules: users ----------------------------------------------------------------------

    @initialize(side=st.sampled_from(SIDES))
    def first_proposal(self, side: str) -> None:
        self.propose(side)

    @rule(side=st.sampled_from(SIDES))
    def propose(self, side: str) -> None:
        if len(self.tickets) >= 3:
            return
        w = self.world
        ticket = propose_ticket(
            w[side],
            partner=w[f"{side}_partner"],
            kind=JobKind.PSI,
            local_dataset=w[f"{side}_dataset"],
            remote_dataset=w[f"{side}_remote"],
        )
        self.tickets.append(ticket.id if side == "alpha" else mirror(ticket.id))

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2))
    def approve(self, side: str, i: int) -> None:
        ticket = self.ticket_on(side, i)
        if ticket is not None:
            self.attempt(approve_ticket, ticket, acting_user=None, source="api")

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2))
    def reject(self, side: str, i: int) -> None:
        ticket = self.ticket_on(side, i)
        if ticket is not None:
            self.attempt(reject_ticket, ticket, reason="no", acting_user=None, source="api")

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2))
    def withdraw(self, side: str, i: int) -> None:
        ticket = self.ticket_on(side, i)
        if ticket is not None:
            self.attempt(withdraw_ticket, ticket, reason="changed my mind", acting_user=None, source="api")

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2))
    def cancel(self, side: str, i: int) -> None:
        job = self.job_on(side, i)
        if job is not None:
            self.attempt(cancel_job, job, acting_user=None, source="api", reason="stop")

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2))
    def retry(self, side: str, i: int) -> None:
        job = self.job_on(side, i)
        if job is not None:
            self.attempt(retry_job, job, acting_user=None, source="api")

    @rule(i=st.integers(0, 2))
    def deadline_passes(self, i: int) -> None:
        """The ticket's deadline (one instant, on both copies and in a proposal still on its way) is past."""
        past = timezone.now() - dt.timedelta(seconds=1)
        for side in SIDES:
            ticket = self.ticket_on(side, i)
            if ticket is None:
                continue
            Ticket.objects.filter(pk=ticket.pk).update(expires_at=past)
            for message in OutboxMessage.objects.filter(ticket_id=ticket.pk, kind="ticket.proposed"):
                message.payload["expires_at"] = past.isoformat()
                message.save(update_fields=["payload"])

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2))
    def expiry_beat(self, side: str, i: int) -> None:
        """That side's beat expires its copy if it is undecided and past the deadline."""
        ticket = self.ticket_on(side, i)
        if ticket is not None:
            self.attempt(expire_ticket, ticket)

    # -- rules: launcher and runtime -------------------------------------------------------

    def launch_job(self, side: str, job: Job) -> None:
        """What the launcher does with a pending job (it refuses one whose ticket is not approved)."""
        if job.status != J.PENDING or job.ticket.status in NOT_APPROVED:
            return
        self.attempt(set_job_status, job, J.STARTING, source="launcher")
        job.refresh_from_db()
        if job.status == J.STARTING:
            self.launched.add((side, self.canonical_job(side, job)))

    def end_runtime(self, side: str, job: Job, ok: bool) -> None:
        """This side's runtime ends: success needs the partner's runtime up, or ended well, too."""
        key = (side, self.canonical_job(side, job))
        if job.status not in (J.STARTING, J.RUNNING) or key not in self.launched or key in self.ended:
            return
        theirs = (other(side), key[1])
        both = theirs in self.launched and self.ended.get(theirs, True)
        status = J.SUCCEEDED if ok and both else J.FAILED
        self.ended[key] = status == J.SUCCEEDED
        self.attempt(
            set_job_status, job, status, error="" if status == J.SUCCEEDED else "runtime failed", source="runtime"
        )

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2))
    def launch(self, side: str, i: int) -> None:
        job = self.job_on(side, i)
        if job is not None:
            self.launch_job(side, job)

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2))
    def runtime_reports_running(self, side: str, i: int) -> None:
        job = self.job_on(side, i)
        if job is not None and job.status == J.STARTING:
            self.attempt(set_job_status, job, J.RUNNING, source="runtime")

    @rule(side=st.sampled_from(SIDES), i=st.integers(0, 2), ok=st.booleans())
    def runtime_ends(self, side: str, i: int, ok: bool) -> None:
        job = self.job_on(side, i)
        if job is not None:
            self.end_runtime(side, job, ok)

    # -- rules: the wire -------------------------------------------------------------------

    @rule(
        side=st.sampled_from(SIDES),
        pick=st.integers(0, 7),
        fault=st.sampled_from(["ok", "ok", "ok", "drop", "ack_lost"]),
    )
    def deliver(self, side: str, pick: int, fault: str) -> None:
        heads = self.lane_heads(side)
        if heads:
            self.send(side, heads[pick % len(heads)], fault)

    # -- quiescence and the property -------------------------------------------------------

    def quiesce(self) -> None:
        for _ in range(60):
            moved = False
            for side in SIDES:
                while heads := self.lane_heads(side):
                    self.send(side, heads[0], "ok")
                    moved = True
            for side in SIDES:
                for ticket in Ticket.objects.filter(workspace=self.world[side], status__in=(S.PROPOSED, S.PENDING)):
                    if ticket.expires_at and ticket.expires_at <= timezone.now():
                        moved = expire_ticket(ticket) or moved
            for step in ("launch", "end"):
                for side in SIDES:
                    for job in Job.objects.filter(workspace=self.world[side], status__in=ACTIVE).select_related(
                        "ticket"
                    ):
                        before = job.status
                        if step == "launch":
                            self.launch_job(side, job)
                        else:
                            self.end_runtime(side, job, ok=True)
                        job.refresh_from_db()
                        moved = moved or job.status != before
            if not moved:
                return
        raise AssertionError("the two sides never went quiet")

    def check_agreement(self) -> None:
        problems = []
        for tid in self.tickets:
            a = Ticket.objects.filter(pk=tid).first()
            b = Ticket.objects.filter(pk=mirror(tid)).first()
            if a is None or b is None:
                problems.append(f"ticket {tid} exists on one side only")
                continue
            # "proposed" (the proposer's word) and "pending" (the receiver's) are one state.
            if a.status.replace(S.PENDING, S.PROPOSED) != b.status.replace(S.PENDING, S.PROPOSED):
                problems.append(f"ticket {tid}: alpha {a.status}, beta {b.status}")
            a_jobs = dict(a.jobs.values_list("attempt", "status"))
            b_jobs = dict(b.jobs.values_list("attempt", "status"))
            if a_jobs != b_jobs:
                problems.append(f"ticket {tid} jobs: alpha {a_jobs}, beta {b_jobs}")
            for side, t in (("alpha", a), ("beta", b)):
                if t.status in NOT_APPROVED and t.jobs.filter(status=J.SUCCEEDED).exists():
                    problems.append(f"ticket {tid} is {t.status} on {side} but a job of it succeeded")
            stuck = Job.objects.filter(ticket__in=[a, b], status__in=ACTIVE)
            if stuck.exists():
                problems.append(f"ticket {tid}: jobs never ended: {list(stuck.values_list('attempt', 'status'))}")
        assert not problems, "diverged after quiescence:\n" + "\n".join(problems)

    def teardown(self) -> None:
        try:
            if self.tickets:
                self.quiesce()
                self.check_agreement()
        finally:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)


def _side(name: str) -> dict[str, Any]:
    workspace = Workspace.objects.create(slug=name, name=name.title())
    dataset = Dataset.objects.create(
        workspace=workspace,
        name=f"{name}_users",
        uri=f"/nonexistent/{name}.csv",
        format="csv",
        id_column="id",
        schema=[{"name": "id", "type": "string"}],
        row_count=10,
        checksum="0" * 64,
        size_bytes=100,
    )
    return {"workspace": workspace, "dataset": dataset}


@pytest.fixture
def world(db) -> dict[str, Any]:
    a, b = _side("alpha"), _side("beta")
    out: dict[str, Any] = {"alpha": a["workspace"], "beta": b["workspace"]}
    for me, them in (("alpha", b), ("beta", a)):
        partner = Partner.objects.create(
            workspace=out[me],
            name=f"{other(me)} partner",
            status=PartnerStatus.CONNECTED,
            endpoint="simulated:1",
            remote_workspace_id=them["workspace"].id,
        )
        out[f"{me}_partner"] = partner
        out[f"{me}_dataset"] = (a if me == "alpha" else b)["dataset"]
        DatasetGrant.objects.create(dataset=out[f"{me}_dataset"], partner=partner)
        out[f"{me}_remote"] = RemoteDataset.objects.create(
            workspace=out[me],
            partner=partner,
            remote_id=them["dataset"].id,
            name=them["dataset"].name,
            schema=them["dataset"].schema,
            row_count=10,
        )
    return out


def test_both_sides_agree_after_any_interleaving(world, monkeypatch):
    network_holder: dict[str, Network] = {}

    def fake_deliver(partner: Partner, envelope: peer_pb2.Envelope, *, timeout: float = 0) -> peer_pb2.Ack:
        return network_holder["net"].deliver(partner, envelope, timeout=timeout)

    monkeypatch.setattr(client, "deliver", fake_deliver)

    class Machine(Protocol):
        def __init__(self) -> None:
            super().__init__()
            network_holder["net"] = Network(world)
            self.network = network_holder["net"]

    Machine.world = world
    run_state_machine_as_test(
        Machine,
        settings=settings(
            # Bounded for `make test` (~15 s); FEDSITE_PROTOCOL_EXAMPLES=5000 explores more, with fresh seeds.
            max_examples=int(os.environ.get("FEDSITE_PROTOCOL_EXAMPLES", "200")),
            stateful_step_count=30,
            deadline=None,
            derandomize="FEDSITE_PROTOCOL_EXAMPLES" not in os.environ,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


# -- the races of docs/peer.md, one by one ---------------------------------------------------


@pytest.fixture
def two_sides(world, monkeypatch):
    """The model's two sides and wire, driven by hand; rolled back afterwards."""
    net = Network(world)
    monkeypatch.setattr(client, "deliver", lambda partner, envelope, timeout=0: net.deliver(partner, envelope))
    Protocol.world = world
    machine = Protocol()
    machine.network = net
    yield machine
    transaction.set_rollback(True)
    machine._atomic.__exit__(None, None, None)


def send_all(m: Protocol, side: str) -> None:
    while heads := m.lane_heads(side):
        m.send(side, heads[0], "ok")


def statuses(m: Protocol) -> dict[str, tuple[str, dict[int, str]]]:
    out = {}
    for side in SIDES:
        t = m.ticket_on(side, 0)
        assert t is not None
        out[side] = (t.status, dict(t.jobs.values_list("attempt", "status")))
    return out


def test_a_withdrawal_crossing_a_rejection_ends_rejected_on_both_sides(two_sides):
    m = two_sides
    m.propose("alpha")
    send_all(m, "alpha")
    m.withdraw("alpha", 0)  # crosses …
    m.reject("beta", 0)  # … this
    # the withdrawal arrives first; beta had rejected: its answer carries "rejected", alpha adopts it
    send_all(m, "alpha")
    alpha = m.ticket_on("alpha", 0)
    assert alpha is not None and alpha.status == S.REJECTED
    from apps.audit.models import AuditEvent

    event = AuditEvent.objects.get(workspace=m.world["alpha"], verb="ticket.reconciled")
    assert event.data["partner_status"] == S.REJECTED and event.data["answer_to"] == "ticket.withdrawn"
    send_all(m, "beta")  # beta's own rejection then changes nothing
    assert statuses(m) == {"alpha": (S.REJECTED, {}), "beta": (S.REJECTED, {})}


def test_a_withdrawal_crossing_an_approval_wins_and_cancels_the_launched_job_on_both_sides(two_sides):
    m = two_sides
    m.propose("alpha")
    send_all(m, "alpha")
    m.withdraw("alpha", 0)
    m.approve("beta", 0)
    m.launch("beta", 0)  # beta's runtime already started
    send_all(m, "beta")  # the approval reaches alpha after its withdrawal
    send_all(m, "alpha")
    send_all(m, "beta")
    assert statuses(m) == {"alpha": (S.WITHDRAWN, {1: J.CANCELLED}), "beta": (S.WITHDRAWN, {1: J.CANCELLED})}


def test_a_cancel_crossing_a_success_ends_cancelled_on_both_sides(two_sides):
    m = two_sides
    m.propose("alpha")
    send_all(m, "alpha")
    m.approve("beta", 0)
    send_all(m, "beta")
    m.launch("alpha", 0)
    m.launch("beta", 0)
    m.runtime_ends("beta", 0, ok=True)  # beta's half finished …
    m.cancel("alpha", 0)  # … as alpha's user cancelled
    send_all(m, "alpha")
    send_all(m, "beta")
    assert statuses(m) == {"alpha": (S.CANCELLED, {1: J.CANCELLED}), "beta": (S.CANCELLED, {1: J.CANCELLED})}


def test_a_retry_crossing_a_withdrawal_is_held_cancelled_on_both_sides(two_sides):
    m = two_sides
    m.propose("alpha")
    send_all(m, "alpha")
    m.approve("beta", 0)
    send_all(m, "beta")  # alpha approved, its job 1 pending
    m.launch("beta", 0)
    m.runtime_ends("beta", 0, ok=False)  # beta's run 1 failed at once
    m.retry("beta", 0)  # beta retries …
    m.withdraw("alpha", 0)  # … as alpha withdraws
    send_all(m, "beta")
    send_all(m, "alpha")
    send_all(m, "beta")
    both = (S.WITHDRAWN, {1: J.CANCELLED, 2: J.CANCELLED})
    assert statuses(m) == {"alpha": both, "beta": both}


def test_a_refused_message_is_not_a_dead_end_the_sender_adopts_the_state_the_refusal_carries(two_sides):
    from apps.audit.models import AuditEvent
    from apps.peer.outbox import enqueue

    m = two_sides
    m.propose("alpha")
    send_all(m, "alpha")
    m.reject("beta", 0)  # beta's rejection has not reached alpha yet
    alpha = m.ticket_on("alpha", 0)
    assert alpha is not None and alpha.status == S.PROPOSED
    # given: a message beta must refuse (only beta decides this ticket)
    with transaction.atomic():
        bogus = enqueue(alpha.partner, "ticket.approved", {"ticket_id": str(alpha.id)}, ticket_id=alpha.id)
    m.send("alpha", bogus, "ok")
    bogus.refresh_from_db()
    assert bogus.status == OutboxStatus.REFUSED and "cannot mark this ticket approved" in bogus.last_error
    # then: alpha adopted beta's copy from the refusal, with its reason, and says so
    alpha.refresh_from_db()
    assert alpha.status == S.REJECTED and alpha.decision_comment == "no"
    assert "reconciled: ticket proposed → rejected" in bogus.last_error
    event = AuditEvent.objects.get(workspace=m.world["alpha"], verb="ticket.reconciled")
    assert event.data["answer_to"] == "ticket.approved" and event.data["changes"] == ["ticket proposed → rejected"]


def test_the_partners_success_makes_a_side_still_running_look_at_its_runtime_at_once(
    two_sides, monkeypatch, django_capture_on_commit_callbacks
):
    import workers.tasks

    m = two_sides
    m.propose("alpha")
    send_all(m, "alpha")
    m.approve("beta", 0)
    send_all(m, "beta")
    m.launch("alpha", 0)
    m.launch("beta", 0)
    alpha_job = m.job_on("alpha", 0)
    assert alpha_job is not None
    Job.objects.filter(pk=alpha_job.pk).update(handle={"backend": "local", "state": "running", "pid": 1})
    nudged: list[bool] = []
    monkeypatch.setattr(workers.tasks.reconcile_jobs, "delay", lambda: nudged.append(True))
    m.runtime_ends("beta", 0, ok=True)
    with django_capture_on_commit_callbacks(execute=True):
        send_all(m, "beta")  # beta's "succeeded" reaches alpha, whose run is still active
    assert nudged
    alpha_job.refresh_from_db()
    assert alpha_job.status == J.STARTING and alpha_job.remote_status == J.SUCCEEDED  # its own runtime decides
