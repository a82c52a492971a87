"""Continual split-NN training on committed stream blocks (runtime/stream/train.py), both sides as threads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.config import parse_config
from runtime.errors import ConfigError, DataError
from tests.pki import make_party
from tests.runtime.helpers import Recorder, free_port_pair, pair_configs, run_threads
from tests.runtime.stream_blocks import events, write_block, write_blocks

pytestmark = pytest.mark.runtime

TRAIN = {"batch_size": 64, "learning_rate": 0.01, "bottom_layers": [8], "top_layers": [8], "l2_regularization": 0.0}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("pki")
    return make_party(d, "alpha"), make_party(d, "beta")


def configs(pki, work: Path, stream: dict[str, Any]) -> tuple[dict, dict]:
    common = {"job_id": "stream-job-1", "train": TRAIN, "stream": stream}
    return pair_configs(pki, work, work, work, common, id_column="example_id")


def run_pair(leader: dict, follower: dict, during: Any = None) -> tuple[Any, Any, Recorder, Recorder]:
    from runtime.stream import train

    return run_threads(train, leader, follower, during=during, timeout=180)


def versions(rep: Recorder) -> list[dict]:
    return [e["data"] for e in rep.events if e["type"] == "result" and e["stage"] == "stream_version"]


@pytest.fixture(scope="module")
def streamed(pki, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("stream")
    leader, follower = configs(pki, work, {"publish_every_blocks": 2, "stop_after_versions": 3, "block_size": 400})

    def land_later() -> None:
        # No block yet: both sides wait (the leader says it is idle) rather than fail.
        time.sleep(6.5)
        write_blocks(work / "alpha", work / "beta", 0, 6, 400)

    lres, fres, lrep, frep = run_pair(leader, follower, during=land_later)
    return work, leader, follower, lres, fres, lrep, frep


def test_versions_follow_the_blocks_on_both_sides(streamed) -> None:
    work, _l, _f, lres, fres, lrep, frep = streamed
    assert not isinstance(lres, Exception), lres
    assert not isinstance(fres, Exception), fres
    assert lres == fres  # both sides agree on every count
    # The six blocks land one after another, so the trainer may take them in 3 or more rounds.
    assert 3 <= lres["rounds"] <= 6
    assert {k: v for k, v in lres.items() if k != "rounds"} == {"last_block": 5, "versions": 3, "rows_trained": 2400}
    lv, fv = versions(lrep), versions(frep)
    assert [v["version"] for v in lv] == [v["version"] for v in fv] == [1, 2, 3]
    assert [v["blocks"] for v in lv] == [[0, 1], [2, 3], [4, 5]]
    for side, vs in (("alpha", lv), ("beta", fv)):
        for v in vs:
            assert v["model_dir"] == str(work / side / "stream" / "versions" / f"v{v['version']:04d}")
            assert (Path(v["model_dir"]) / "saved_model.pb").exists()
            assert json.loads((Path(v["model_dir"]) / "fedsite.json").read_text())["stream_version"] == v["version"]
    # progressive validation: new blocks scored before training on them; the model learns
    aucs = [v["metrics"]["progressive"]["auc"] for v in lv]
    assert aucs[-1] > 0.75 and aucs[-1] > aucs[0], aucs
    # the follower sees the same (shared) metrics
    assert [v["metrics"]["progressive"]["auc"] for v in fv] == pytest.approx(aucs)


def test_a_restart_resumes_from_the_last_round_both_sides_checkpointed(pki, streamed) -> None:
    work, leader, follower, first, *_ = streamed
    done = first["rounds"]  # how many rounds the first run took
    write_blocks(work / "alpha", work / "beta", 6, 2, 400)
    leader = {**leader, "stream": {**leader["stream"], "stop_after_versions": 4}}
    follower = {**follower, "stream": {**follower["stream"], "stop_after_versions": 4}}
    lres, fres, lrep, frep = run_pair(leader, follower)
    assert lres == fres == {"rounds": done + 1, "last_block": 7, "versions": 4, "rows_trained": 3200}
    assert [v["version"] for v in versions(lrep)] == [4]
    assert any(f"resuming after round {done}" in e.get("line", "") for e in frep.events)


def test_blocks_that_differ_between_the_sides_fail_both(pki, tmp_path: Path) -> None:
    leader, follower = configs(pki, tmp_path, {"publish_every_blocks": 1, "stop_after_versions": 1})
    lf, ff = events(100, 3)
    write_block(tmp_path / "alpha", 0, lf)
    write_block(tmp_path / "beta", 0, ff.iloc[1:])
    lres, fres, _lr, _fr = run_pair(leader, follower)
    assert isinstance(lres, DataError) and "differ from this side's" in str(lres)
    assert isinstance(fres, Exception) and "differ" in str(fres)


def test_bad_stream_config_is_refused_before_any_work(pki, tmp_path: Path) -> None:
    from runtime.stream import train

    leader, _ = configs(pki, tmp_path, {"publish_every_blocks": 0})
    with pytest.raises(ConfigError, match="stream.publish_every_blocks"):
        train.run(parse_config(leader), Recorder())
    leader, _ = configs(pki, tmp_path, {})
    leader["data"].pop("label_column")
    with pytest.raises(ConfigError, match="data.label_column"):
        train.run(parse_config(leader), Recorder())


def test_join_and_training_run_side_by_side_in_one_runtime_process(pki, tmp_path: Path) -> None:
    """`python -m runtime run` with steps [stream_join, stream_train]: raw events in, versions out, on both sides."""
    import subprocess
    import sys

    from runtime.stream.synth import write_parts

    leader, follower = configs(
        pki,
        tmp_path,
        {
            "publish_every_blocks": 2,
            "stop_after_versions": 2,
            "max_batch_events": 600,
            "poll_interval_s": 0.05,
            "stop_when_idle_s": 4.0,
        },
    )
    # the join listens on a port and training on the next one: both must be free (a taken second port
    # failed the leader's training at once while the follower waited for it)
    port = free_port_pair()
    leader["listen_address"], follower["peer_address"] = f"127.0.0.1:{port}", f"127.0.0.1:{port}"
    for raw in (leader, follower):  # a side left alone fails within a minute, with its output in the assertion
        raw["train"] = {**raw["train"], "connect_timeout_s": 60}
    lf, ff = events(3000, 11)
    for side, frame in (("in-alpha", lf), ("in-beta", ff)):
        write_parts(frame, tmp_path / side, 500)
    leader["data"]["path"], follower["data"]["path"] = str(tmp_path / "in-alpha"), str(tmp_path / "in-beta")
    procs = []
    for raw in (leader, follower):
        path = Path(raw["output_dir"]).with_suffix(".json")
        path.write_text(json.dumps({**raw, "steps": ["stream_join", "stream_train"]}))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "runtime", "run", "--config", str(path)],
                cwd=Path(__file__).resolve().parents[2],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for side in ("alpha", "beta"):
        result = json.loads((tmp_path / side / "result.json").read_text())
        assert result["stream_join"]["blocks_committed"] >= 4, result
        assert result["stream_train"]["versions"] == 2 and result["stream_version"]["version"] == 2
        assert (tmp_path / side / "stream" / "versions" / "v0002" / "saved_model.pb").exists()
