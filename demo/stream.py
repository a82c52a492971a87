"""The demo's streaming act: live click and conversion events, joined and learned from continually.

Alpha (the ad platform) sees clicks: a click id, its time, the ad slot and hour, and whether the
click converted (the label, known to the platform from its attribution pipeline). Beta (the
advertiser) sees its half of the same clicks when the visitor lands on its site, a few seconds
later (realistic delays, out of order), with what it knows: basket value, visits, category.
About 70 % of clicks reach the advertiser. Each side's events land as part files in a folder of
its own data folder; a `stream_join_train` ticket joins them and publishes model versions.
With `beta_nats`, beta's events go to a NATS JetStream subject instead (one JSON object per event),
and beta names that subject as its source: the broker path, through both installations.

Used by `scripts/demo.py --stream` and by the live two-installation test.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from fedsite.localcluster import ApiClient, Installation

T = TypeVar("T")
CLICKS = "events/clicks"
CONVERSIONS = "events/conversions"
SHARED = 0.7
TERMINAL = {"succeeded", "failed", "cancelled"}


def _examples(rng: np.random.Generator, start: int, n: int, now: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`n` clicks from click number `start` on: the platform's events, and the advertiser's for those that arrive."""
    ids = np.array([f"k{start + i:010d}" for i in range(n)], dtype=object)
    t = now - rng.uniform(0.0, 1.0, n)
    slot = rng.integers(0, 4, n)
    hour = rng.integers(0, 24, n)
    basket = rng.gamma(2.0, 20.0, n)
    visits = rng.poisson(3.0, n)
    category = rng.choice(["shoes", "books", "garden", "toys"], n)
    z = (
        -1.2
        + 0.9 * (slot == 0)
        - 0.5 * (slot == 3)
        + 0.03 * (basket - 40.0)
        + 0.25 * (visits - 3)
        + 0.8 * (category == "shoes")
        + 0.4 * np.sin(hour / 24 * 2 * np.pi)
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-2.0 * z))).astype(np.int64)
    clicks = pd.DataFrame({"click_id": ids, "event_time": t, "slot": slot, "hour": hour, "converted": label})
    arrives = rng.random(n) < SHARED
    delay = rng.exponential(2.0, n).clip(0.1, 20.0)  # the visit lands a few seconds after the click
    visits_df = pd.DataFrame(
        {
            "click_id": ids,
            "event_time": t + delay,
            "basket_value": basket.round(2),
            "visits": visits,
            "category": category,
        }
    )[arrives]
    return clicks, visits_df


def _land(df: pd.DataFrame, folder: Path, part: int) -> None:
    """A part file appears whole: written under a dot name, then renamed."""
    name = f"part-{part:09d}.parquet"
    tmp = folder / f".{name}.tmp"
    df.to_parquet(tmp, index=False)
    tmp.rename(folder / name)


def write_sample(folder: Path, name: str, rows: int = 200, seed: int = 7) -> tuple[Path, Path]:
    """A small table of each side's events, registered as the datasets that describe the streams."""
    clicks, visits = _examples(np.random.default_rng(seed), 0, rows, time.time())
    folder.mkdir(parents=True, exist_ok=True)
    a, b = folder / f"{name}_clicks.csv", folder / f"{name}_visits.csv"
    clicks.to_csv(a, index=False)
    visits.to_csv(b, index=False)
    return a, b


class JetStreamSink:
    """Publishes one side's events to a JetStream subject, one JSON object per event (creates the stream).

    nats-py is asyncio; its loop runs on a thread of its own, so callers stay synchronous.
    """

    def __init__(self, url: str, stream: str, subject: str) -> None:
        import nats

        self.stream, self.subject = stream, subject
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jetstream-sink", daemon=True)
        self._thread.start()
        self._nc = self._call(nats.connect(url, connect_timeout=5, max_reconnect_attempts=2))
        self._js = self._nc.jetstream()
        self._call(self._js.add_stream(name=stream, subjects=[subject]))

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __call__(self, df: pd.DataFrame, part: int) -> None:
        rows = df.to_dict("records")

        async def go() -> None:
            for r in rows:
                await self._js.publish(self.subject, json.dumps(r).encode())

        self._call(go())

    def close(self, *, delete: bool = False) -> None:
        try:
            if delete:
                self._call(self._js.delete_stream(self.stream))
            self._call(self._nc.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


class EventGenerator:
    """Writes clicks (alpha's folder) and visits (beta's folder, or `beta_sink`) at a steady rate until stopped."""

    def __init__(
        self,
        alpha_folder: Path,
        beta_folder: Path,
        *,
        rate: float = 400.0,
        seed: int = 2026,
        beta_sink: Callable[[pd.DataFrame, int], None] | None = None,
    ) -> None:
        self.folders = (alpha_folder, beta_folder)
        self.beta_sink = beta_sink or (lambda df, part: _land(df, beta_folder, part))
        self.rate = rate
        self.rng = np.random.default_rng(seed)
        self.clicks = 0
        self.visits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-generator", daemon=True)
        self._pending: list[pd.DataFrame] = []  # visits not yet landed (they arrive later)

    def start(self) -> EventGenerator:
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        part, tick = 0, 0.5
        while not self._stop.is_set():
            now = time.time()
            n = int(self.rate * tick)
            clicks, visits = _examples(self.rng, self.clicks, n, now)
            self.clicks += n
            _land(clicks, self.folders[0], part)
            self._pending.append(visits)
            waiting = pd.concat(self._pending, ignore_index=True)
            due = waiting["event_time"] <= now
            if due.any():
                # Each side's events arrive in the order they happen on that side, not the partner's.
                landed = waiting[due].sample(frac=1.0, random_state=part)
                self.beta_sink(landed, part)
                self.visits += len(landed)
            self._pending = [waiting[~due]]
            part += 1
            self._stop.wait(tick)


@dataclass
class StreamResult:
    """What the streaming act reports."""

    ticket_id: str
    job_id: str
    versions: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def connect(a: ApiClient, A: str, b: ApiClient, B: str) -> tuple[dict, dict]:
    """Alpha invites, beta accepts (or they already are partners): (alpha's partner, beta's partner)."""
    existing = a.get(f"{A}/partners/")["results"]
    if existing:
        return existing[0], b.get(f"{B}/partners/")["results"][0]
    code = a.post(f"{A}/partners/invitations/")["code"]
    beta_partner = b.post(f"{B}/partners/accept/", {"code": code, "name": "Alpha Ads"})
    alpha_partner = a.wait_for(f"{A}/partners/", lambda body: any(p["status"] == "connected" for p in body["results"]))
    return alpha_partner["results"][0], beta_partner


def run_stream_flow(
    alpha: Installation,
    beta: Installation,
    *,
    clients: tuple[ApiClient, ApiClient, ApiClient, ApiClient],
    workspaces: tuple[str, str] = ("alpha", "beta"),
    versions: int = 3,
    publish_every_blocks: int = 4,
    rate: float = 400.0,
    stop_reason: str = "demo over: enough versions for today",
    timeout_s: float = 600.0,
    say: Any = print,
    beta_nats: tuple[str, str] | None = None,
) -> StreamResult:
    """Connect, describe the streams, propose and approve a stream_join_train ticket, generate events,
    watch versions being published; stop from beta (the follower) with a reason once `versions` exist
    (0: never). `clients` = (alpha admin, beta admin, alpha approver, beta approver).
    `beta_nats` = (JetStream stream, subject): beta's events are published there, and beta's source is it."""
    t0 = time.monotonic()
    a_admin, b_admin, a_appr, b_appr = clients
    A, B = (f"/api/v1/workspaces/{w}" for w in workspaces)
    alpha_partner, beta_partner = connect(a_admin, A, b_admin, B)
    a_folder, b_folder = alpha.data_folder(workspaces[0]), beta.data_folder(workspaces[1])
    a_sample, _ = write_sample(a_folder, "stream_sample")
    _, b_sample = write_sample(b_folder, "stream_sample")
    a_ds = a_admin.post(
        f"{A}/datasets/",
        {"name": "clicks_sample", "uri": a_sample.name, "id_column": "click_id", "label_column": "converted"},
    )
    b_ds = b_admin.post(f"{B}/datasets/", {"name": "visits_sample", "uri": b_sample.name, "id_column": "click_id"})
    b_admin.post(f"{B}/datasets/{b_ds['id']}/grants/", {"partner": beta_partner["id"]})
    shared = a_admin.wait_for(
        f"{A}/partner-datasets/", lambda body: any(d["name"] == "visits_sample" for d in body["results"])
    )
    remote = next(d for d in shared["results"] if d["name"] == "visits_sample")
    for folder, rel in ((a_folder, CLICKS), (b_folder, CONVERSIONS)):
        (folder / rel).mkdir(parents=True, exist_ok=True)
    say("  ✓ partners connected, the event streams described (a sample of each side's events)")

    ticket = a_admin.post(
        f"{A}/tickets/",
        {
            "partner": alpha_partner["id"],
            "kind": "stream_join_train",
            "local_dataset": a_ds["id"],
            "remote_dataset": remote["id"],
            "name": "Live clicks × visits",
            "stream_source": {"kind": "folder", "location": CLICKS},
            "params": {
                "stream": {"max_delay_s": 60, "block_size": 2000, "publish_every_blocks": publish_every_blocks},
                "train": {
                    "batch_size": 128,
                    "learning_rate": 0.01,
                    "bottom_layers": [16],
                    "top_layers": [8],
                    "l2_regularization": 1.0,
                },
            },
            "comment": "Join live clicks with site visits; a new model every few blocks.",
        },
    )
    b_appr.wait_for(f"{B}/tickets/{ticket['id']}/", lambda t: t["status"] == "pending")
    sink: JetStreamSink | None = None
    b_source = {"kind": "folder", "location": CONVERSIONS}
    if beta_nats:
        sink = JetStreamSink(os.environ.get("FEDSITE_NATS_URL", "nats://127.0.0.1:4222"), *beta_nats)
        b_source = {"kind": "nats", "stream": beta_nats[0], "location": beta_nats[1]}
    b_appr.post(f"{B}/tickets/{ticket['id']}/approve/", {"comment": "Go.", "stream_source": b_source})
    where = f"JetStream subject {beta_nats[1]}" if beta_nats else "events folder"
    say(f"  ✓ stream_join_train proposed by alpha, approved by beta (alpha named its events folder, beta its {where})")
    gen = EventGenerator(a_folder / CLICKS, b_folder / CONVERSIONS, rate=rate, beta_sink=sink).start()
    result = StreamResult(ticket_id=ticket["id"], job_id="")
    try:
        a_job = a_appr.wait_for(f"{A}/jobs/?ticket={ticket['id']}", lambda body: body["count"] > 0)["results"][0]
        result.job_id = a_job["id"]
        deadline = time.monotonic() + timeout_s
        seen = 0
        last_line = 0.0
        while time.monotonic() < deadline:
            job = a_appr.get(f"{A}/jobs/{a_job['id']}/")
            stream = job.get("stream") or {}
            published = stream.get("versions") or []
            for v in published[seen:]:
                auc = v.get("auc")
                shown = (
                    f" (AUC {auc:.3f} on the blocks since the last version, scored before training on them)"
                    if auc is not None
                    else ""
                )
                say(f"  ✓ model version v{v['version']} published{shown}")
            seen = len(published)
            if time.monotonic() - last_line > 5:
                mine, theirs = stream.get("local") or {}, stream.get("partner") or {}
                say(
                    f"    {job['status']:8} {'waiting for data' if stream.get('waiting_for_data') else job['stage'] or '-':16}"
                    f" events alpha {mine.get('events_read') or 0:>8,.0f} beta {theirs.get('events_read') or 0:>8,.0f}"
                    f"  match {100 * (mine.get('match_rate') or 0):4.1f}%  blocks {mine.get('blocks_committed') or 0:>4,.0f}"
                    f"  lag {mine.get('lag_s') or 0:5.1f}s  late {mine.get('late_events') or 0:,.0f}"
                )
                last_line = time.monotonic()
            if job["status"] in TERMINAL or (versions and seen >= versions):
                break
            alpha.check_alive()
            beta.check_alive()
            time.sleep(1.0)
        result.versions = published
        result.stats = stream
        if versions and job["status"] not in TERMINAL:
            b_job = b_appr.get(f"{B}/jobs/{a_job['id']}/")
            b_appr.post(f"{B}/jobs/{b_job['id']}/cancel/", {"reason": stop_reason})
            say(f"  ✓ beta stopped the job: {stop_reason!r}")
        for side, (client, base) in {"alpha": (a_appr, A), "beta": (b_appr, B)}.items():
            done = client.wait_for(
                f"{base}/jobs/{a_job['id']}/", lambda j: j["status"] in TERMINAL, timeout=min(120.0, timeout_s)
            )
            result.statuses[side] = done["status"]
            result.errors[side] = done["error"]
    finally:
        gen.stop()
        if sink is not None:
            sink.close(delete=True)
    result.seconds = round(time.monotonic() - t0, 1)
    return result
