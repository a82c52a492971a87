"""The real-time sample join between a leader and a follower runtime over mutual TLS.

Both sides run as threads of this process (real gRPC with TLS, real files); the
crash test kills one side at random protocol points in-process and, for a subset,
kills real `python -m runtime stream_join` subprocesses with SIGKILL.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from runtime.config import parse_config
from runtime.errors import ConfigError
from runtime.stream import step
from runtime.stream.synth import ID_COLUMN, TIME_COLUMN, batch_join, make_events, write_parts
from tests.pki import make_party, tls_config
from tests.runtime.test_train import Recorder, free_port

pytestmark = pytest.mark.runtime

FAST = {"poll_interval_s": 0.02, "peer_timeout_s": 20, "connect_timeout_s": 20, "stop_when_idle_s": 0.3}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("pki")
    return make_party(d, "alpha"), make_party(d, "beta")


def configs(
    pki, work: Path, stream: dict[str, Any] | None = None, job: str = "job-s", port: int | None = None
) -> tuple[dict, dict]:
    alpha, beta = pki
    port = port or free_port()
    s = {**FAST, **(stream or {})}
    leader = {
        "job_id": job,
        "role": "leader",
        "listen_address": f"127.0.0.1:{port}",
        "tls": tls_config(alpha, beta),
        "data": {"path": str(work / "in-alpha"), "id_column": ID_COLUMN, "label_column": "label"},
        "output_dir": str(work / "alpha"),
        "stream": dict(s),
    }
    follower = {
        "job_id": job,
        "role": "follower",
        "peer_address": f"127.0.0.1:{port}",
        "tls": tls_config(beta, alpha),
        "data": {"path": str(work / "in-beta"), "id_column": ID_COLUMN},
        "output_dir": str(work / "beta"),
        "stream": dict(s),
    }
    (work / "in-alpha").mkdir(parents=True, exist_ok=True)
    (work / "in-beta").mkdir(parents=True, exist_ok=True)
    return leader, follower


def run_side(raw: dict, out: dict, name: str, rep: Recorder) -> None:
    try:
        out[name] = step.run(parse_config(raw), rep)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        out[name] = exc


def run_pair(leader: dict, follower: dict, timeout: float = 60) -> tuple[Any, Any, Recorder, Recorder]:
    out: dict[str, Any] = {}
    reps = {"leader": Recorder(), "follower": Recorder()}
    threads = [
        threading.Thread(target=run_side, args=(cfg, out, name, reps[name]))
        for name, cfg in (("leader", leader), ("follower", follower))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a side hung"
    return out["leader"], out["follower"], reps["leader"], reps["follower"]


def read_blocks(output_dir: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """All committed blocks of a side, in order, and their manifests; checks each manifest against its block."""
    from runtime.stream.blocks import id_digest

    frames, manifests = [], []
    for seq, m in step.iter_blocks(output_dir):
        t = pq.read_table(Path(output_dir) / "stream" / "blocks" / f"{seq:08d}.parquet").to_pandas()
        assert m["seq"] == seq and m["committed"] is True and m["count"] == len(t)
        assert m["id_digest"] == id_digest(list(t["example_id"]))
        assert m["event_time_min"] == t["event_time"].min() and m["event_time_max"] == t["event_time"].max()
        frames.append(t)
        manifests.append(m)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"example_id": [], "event_time": []})
    return df, manifests


def check_exact(work: Path, leader_df: pd.DataFrame, follower_df: pd.DataFrame, max_delay: float) -> int:
    """Both sides' blocks: same ids in the same order, no duplicates, equal to the batch join."""
    lb, lm = read_blocks(str(work / "alpha"))
    fb, fm = read_blocks(str(work / "beta"))
    assert [m["id_digest"] for m in lm] == [m["id_digest"] for m in fm]
    assert list(lb["example_id"]) == list(fb["example_id"])
    assert lb["example_id"].is_unique
    ref = batch_join(leader_df, follower_df, max_delay)
    assert set(lb["example_id"]) == set(ref[ID_COLUMN])
    # each side's rows are its own events, unchanged
    lj = lb.merge(leader_df.rename(columns={ID_COLUMN: "example_id"}), on="example_id", suffixes=("_b", "_s"))
    assert len(lj) == len(lb)
    assert (lj[f"{TIME_COLUMN}_b"] == lj[f"{TIME_COLUMN}_s"]).all() and (lj["label_b"] == lj["label_s"]).all()
    fj = fb.merge(follower_df.rename(columns={ID_COLUMN: "example_id"}), on="example_id", suffixes=("_b", "_s"))
    assert (fj[f"{TIME_COLUMN}_b"] == fj[f"{TIME_COLUMN}_s"]).all() and (fj["f1_b"] == fj["f1_s"]).all()
    assert "label" in lb.columns and "label" not in fb.columns
    return len(lb)


def test_join_equals_batch_join(pki, tmp_path: Path) -> None:
    ldf, fdf = make_events(3000, max_delay=600, disorder_s=30, seed=1)
    write_parts(ldf, tmp_path / "in-alpha", 400)
    write_parts(fdf, tmp_path / "in-beta", 350, fmt="csv")
    leader, follower = configs(pki, tmp_path, {"max_batch_events": 500})
    lres, fres, lrep, frep = run_pair(leader, follower)
    assert not isinstance(lres, BaseException), lres
    assert not isinstance(fres, BaseException), fres
    n = check_exact(tmp_path, ldf, fdf, 600)
    assert n > 1500
    assert lres["matched"] == fres["matched"] == n
    assert lres["events_read"] == fres["events_read"] == 3000
    assert lres["late_events"] == fres["late_events"] == 0
    assert lres["blocks_committed"] >= 2
    names = {e["name"] for e in lrep.events if e["type"] == "metric"}
    assert {"events_read", "matched", "match_rate", "late_events", "blocks_committed", "lag_s"} <= names
    manifest = json.loads((tmp_path / "alpha" / "stream" / "blocks" / "00000001.json").read_text())
    assert set(manifest) == {
        "seq",
        "count",
        "id_digest",
        "event_time_min",
        "event_time_max",
        "source_offset",
        "committed",
    }
    assert manifest["source_offset"]["file"].startswith("part-")


def test_bad_config_is_named(pki, tmp_path: Path) -> None:
    leader, follower = configs(pki, tmp_path, {"max_delay": 5})
    with pytest.raises(ConfigError, match=r"stream\.max_delay: unknown parameter"):
        step.run(parse_config(leader), Recorder())
    leader, follower = configs(pki, tmp_path, {"source": "kafka"})
    with pytest.raises(ConfigError, match=r"stream\.source: must be one of folder, nats"):
        step.run(parse_config(leader), Recorder())
    leader, follower = configs(pki, tmp_path, {"max_delay_s": -1})
    with pytest.raises(ConfigError, match=r"stream\.max_delay_s: must be >= 0"):
        step.run(parse_config(leader), Recorder())
    leader, follower = configs(pki, tmp_path, {"source": "nats"})
    with pytest.raises(ConfigError, match=r"stream\.nats: required"):
        step.run(parse_config(leader), Recorder())
    leader, _ = configs(pki, tmp_path)
    leader["data"]["path"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="data.path: .*nowhere is not a folder"):
        step.run(parse_config(leader), Recorder())
    leader, _ = configs(pki, tmp_path)
    leader["data"]["label_column"] = None
    with pytest.raises(ConfigError, match="data.label_column: required for the leader"):
        step.run(parse_config(leader), Recorder())
    assert not (tmp_path / "alpha" / "stream" / "blocks").exists() or not any(
        (tmp_path / "alpha" / "stream" / "blocks").iterdir()
    )
