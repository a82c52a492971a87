"""Two real installations run a stream_join_train ticket end to end: live clicks land in alpha's folder and
visits are published to a NATS JetStream subject (127.0.0.1:4222) that beta names as its source; the runtimes join them and train continually, versions appear on both sides under one UUID with
a lineage, and the follower stops the job with a reason the leader sees."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from demo.stream import run_stream_flow
from fedsite.localcluster import Installation
from tests.live import Side, wait_peer_port

pytestmark = pytest.mark.launcher

REASON = "enough for today (from beta)"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("stream2")
    tag = os.getpid()
    insts: dict[str, Installation] = {}
    for index, (name, slug) in enumerate((("salpha", "acme"), ("sbeta", "globex"))):
        data = tmp / name / "data"
        (data / slug).mkdir(parents=True)
        insts[name] = Installation(
            name=f"{name}-{tag}",
            var_dir=tmp / name / "var",
            data_roots=[data],
            worker_concurrency=2,
            runtime_ports=f"{18100 + 100 * index}-{18199 + 100 * index}",
            extra_env={"LOG_LEVEL": "INFO", "CELERY_FILESYSTEM_POLL_S": "0.05"},
        )
    users = {
        "salpha": ("acme", {"alice": ("owner", "alice-password-1")}),
        "sbeta": ("globex", {"bob": ("owner", "bob-password-1")}),
    }

    def bring_up(inst: Installation) -> None:
        slug, people = users[inst.name.rsplit("-", 1)[0]]
        inst.setup(workspace=slug, users=people)
        inst.start()
        inst.wait_ready(90)
        wait_peer_port(inst)

    try:
        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(bring_up, i) for i in insts.values()]:
                f.result()
        alpha = Side(insts["salpha"], "acme", insts["salpha"].client("alice"))
        beta = Side(insts["sbeta"], "globex", insts["sbeta"].client("bob"))
        yield {"alpha": alpha, "beta": beta}
    finally:
        Installation.stop_all(insts.values())  # each also kills its runtimes


def test_a_stream_ticket_publishes_versions_on_both_sides_and_stops_from_the_follower(pair):
    alpha, beta = pair["alpha"], pair["beta"]
    lines: list[str] = []
    tag = uuid.uuid4().hex[:10]
    result = run_stream_flow(
        alpha.inst,
        beta.inst,
        clients=(alpha.api, beta.api, alpha.api, beta.api),
        workspaces=("acme", "globex"),
        versions=2,
        publish_every_blocks=2,
        stop_reason=REASON,
        timeout_s=420,
        say=lines.append,
        beta_nats=(f"FS_{tag.upper()}", f"fstest.{tag}.visits"),
    )
    logs = "\n".join(lines) + "\n" + alpha.inst.log("worker")[-3000:]
    assert len(result.versions) >= 2, logs
    # the follower stopped it; the leader shows why, and both runs ended as cancelled
    assert result.statuses == {"alpha": "cancelled", "beta": "cancelled"}, (result, logs)
    assert result.errors["alpha"] == REASON and result.errors["beta"] == REASON
    mine = alpha.get(f"jobs/{result.job_id}/")
    assert mine["remote_status"] == "cancelled" and mine["stream"]["local"]["events_read"] > 0
    assert beta.get(f"tickets/{result.ticket_id}/")["stream_source"]["kind"] == "nats"  # beta read the broker
    assert alpha.get(f"tickets/{result.ticket_id}/")["status"] == "cancelled"
    # both sides' counters reached the leader's page while it ran
    assert (mine["stream"]["partner"]["events_read"] or 0) > 0, mine["stream"]
    assert 0 < mine["stream"]["local"]["match_rate"] <= 1
    # every version exists on both sides under one UUID, as a chain
    ours = sorted(
        (m for m in alpha.results(f"model-versions/?ticket={result.ticket_id}") if m["sequence"]),
        key=lambda m: m["sequence"],
    )
    assert [m["sequence"] for m in ours] == list(range(1, len(ours) + 1)) and len(ours) >= 2
    for parent, child in zip(ours, ours[1:], strict=False):
        assert child["parent"] == parent["id"] and child["lineage"]["parent"] == parent["id"]
    for m in ours[:2]:
        theirs = beta.wait(f"model-versions/{m['id']}/", lambda body: body.get("role") == "follower", timeout=30)
        assert theirs["sequence"] == m["sequence"] and theirs["parent"] == m["parent"]
        assert m["role"] == "leader" and m["metrics"]["progressive"]["auc"] is not None


def test_a_bad_stream_source_is_refused_clearly(pair):
    alpha = pair["alpha"]
    partner = alpha.results("partners/")[0]
    ds = next(d for d in alpha.results("datasets/") if d["name"] == "clicks_sample")
    remote = alpha.results("partner-datasets/")[0]
    body = {
        "partner": partner["id"],
        "kind": "stream_join_train",
        "local_dataset": ds["id"],
        "remote_dataset": remote["id"],
        "stream_source": {"kind": "folder", "location": "../globex"},
    }
    before = len(alpha.results("tickets/"))
    answer = alpha.post("tickets/", body, expect=400)
    assert "'..' is not allowed" in answer["stream_source.location"][0]
    answer = alpha.post(
        "tickets/", {**body, "stream_source": {"kind": "folder", "location": "events/none"}}, expect=400
    )
    assert "does not exist" in answer["stream_source.location"][0]
    assert len(alpha.results("tickets/")) == before
