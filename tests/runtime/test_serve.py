"""Online serving between a leader and a follower serving runtime over mutual TLS.

Both halves come from real federated training (split NN and SecureBoost) on small
data. The serving runtimes run as threads of this process, except where a test
needs to freeze or kill the follower: there it is a real `python -m runtime serve`.
Every prediction is checked against the whole model evaluated in one process,
computed here independently of the serving code (from the CSV files and both halves).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from fedsite_proto.runtime.v1 import serve_pb2 as pb
from fedsite_proto.runtime.v1 import serve_pb2_grpc as pb_grpc
from runtime.config import parse_config
from tests.pki import make_party, tls_config
from tests.runtime.helpers import Recorder, free_port, make_data

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serving-token-for-tests"
NN_TRAIN = {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "bottom_layers": [8, 4], "top_layers": [4]}
TREE = {"num_trees": 8, "max_depth": 3, "max_bin": 16, "learning_rate": 0.5, "early_stopping_rounds": 0}
TREE.update(key_bits=1024, peer_timeout_s=60, connect_timeout_s=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("pki")
    return make_party(d, "alpha"), make_party(d, "beta")


def _train(module: Any, leader: dict, follower: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def go(name: str, raw: dict) -> None:
        try:
            out[name] = module.run(parse_config(raw), Recorder())
        except Exception as exc:  # noqa: BLE001 - asserted below
            out[name] = exc

    threads = [threading.Thread(target=go, args=kv) for kv in (("leader", leader), ("follower", follower))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not isinstance(out.get("leader"), Exception) and "leader" in out, out
    assert not isinstance(out.get("follower"), Exception) and "follower" in out, out
    return out


def _pair(pki, work: Path, lp: Path, fp: Path, job: str, **blocks: Any) -> tuple[dict, dict]:
    alpha, beta = pki
    port = free_port()
    leader = {
        "job_id": job,
        "role": "leader",
        "listen_address": f"127.0.0.1:{port}",
        "tls": tls_config(alpha, beta),
        "data": {"path": str(lp), "id_column": "id", "label_column": "label"},
        "output_dir": str(work / "alpha"),
        **blocks,
    }
    follower = {
        "job_id": job,
        "role": "follower",
        "peer_address": f"127.0.0.1:{port}",
        "tls": tls_config(beta, alpha),
        "data": {"path": str(fp), "id_column": "id"},
        "output_dir": str(work / "beta"),
        **blocks,
    }
    return leader, follower


@pytest.fixture(scope="module")
def models(pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A split-NN and a tree model trained on the same data; serving data where each side lacks some ids."""
    from runtime.train import step as nn_step
    from runtime.tree import step as tree_step

    work = tmp_path_factory.mktemp("serve-models")
    lp, fp = make_data(work / "data", 600, seed=5)
    nn_l, nn_f = _pair(pki, work / "nn", lp, fp, "train-nn", train=NN_TRAIN)
    _train(nn_step, nn_l, nn_f)
    tr_l, tr_f = _pair(pki, work / "tree", lp, fp, "train-tree", tree=TREE)
    _train(tree_step, tr_l, tr_f)
    # Serving tables: the leader lacks u00590-u00599, the follower lacks u00580-u00589.
    ldf, fdf = pd.read_csv(lp), pd.read_csv(fp)
    slp, sfp = work / "data" / "serve-leader.csv", work / "data" / "serve-follower.csv"
    ldf[~ldf["id"].isin([f"u{i:05d}" for i in range(590, 600)])].to_csv(slp, index=False)
    fdf[~fdf["id"].isin([f"u{i:05d}" for i in range(580, 590)])].to_csv(sfp, index=False)
    return {
        "work": work,
        "leader_csv": lp,
        "follower_csv": fp,
        "serve_leader_csv": slp,
        "serve_follower_csv": sfp,
        "nn": (work / "nn" / "alpha" / "train" / "model", work / "nn" / "beta" / "train" / "model"),
        "tree": (work / "tree" / "alpha" / "tree" / "model", work / "tree" / "beta" / "tree" / "model"),
    }


# -- the whole model in one process (independent of runtime/serve) -------------------------


def whole_nn(models: dict[str, Any], ids: list[str], leader_rows: pd.DataFrame | None = None) -> np.ndarray:
    import tensorflow as tf

    from runtime.train.data import Preprocessor

    ml, mf = models["nn"]
    ldf = (leader_rows if leader_rows is not None else pd.read_csv(models["leader_csv"])).set_index("id")
    fdf = pd.read_csv(models["follower_csv"]).set_index("id")
    pl = Preprocessor.from_json((ml / "preprocess.json").read_text())
    pf = Preprocessor.from_json((mf / "preprocess.json").read_text())
    xl = pl.transform(ldf.loc[ids].reset_index(drop=True))
    xf = pf.transform(fdf.loc[ids].reset_index(drop=True))
    lm, fm = tf.saved_model.load(str(ml)), tf.saved_model.load(str(mf))
    return lm.top(lm.bottom(tf.constant(xl)), fm.bottom(tf.constant(xf))).numpy().astype(np.float64)


def whole_tree(models: dict[str, Any], ids: list[str]) -> np.ndarray:
    ml, mf = models["tree"]
    return whole_tree_scores(ml, mf, models["leader_csv"], models["follower_csv"], ids)


def whole_tree_scores(
    ml: Path, mf: Path, leader_csv: Path, follower_csv: Path, ids: list[str], id_column: str = "id"
) -> np.ndarray:
    """Walk every tree row by row, each split decided by the half that owns it."""
    from runtime.tree.binning import column_codes

    lh, fh = json.loads((ml / "model.json").read_text()), json.loads((mf / "model.json").read_text())
    ldf = pd.read_csv(leader_csv, dtype={id_column: str}).set_index(id_column).loc[ids]
    fdf = pd.read_csv(follower_csv, dtype={id_column: str}).set_index(id_column).loc[ids]
    lspec = {c["name"]: c for c in lh["features"]}
    fspec = {c["name"]: c for c in fh["features"]}
    fsplits = {(s["tree"], s["node"]): s for s in fh["splits"]}
    out = []
    for r in range(len(ids)):
        margin = float(lh["base_margin"])
        for t, tree in enumerate(lh["trees"]):
            nodes = {nd["id"]: nd for nd in tree["nodes"]}
            i = 0
            while "leaf" not in nodes[i]:
                nd = nodes[i]
                if nd["split"] == "leader":
                    code = column_codes(ldf[nd["feature"]].iloc[[r]], lspec[nd["feature"]])[0]
                    left = code <= nd["bin"]
                else:
                    s = fsplits[(t, i)]
                    code = column_codes(fdf[s["feature"]].iloc[[r]], fspec[s["feature"]])[0]
                    left = code <= s["bin"]
                i = 2 * i + 1 if left else 2 * i + 2
            margin += nodes[i]["leaf"]
        out.append(1 / (1 + np.exp(-margin)))
    return np.array(out)


# -- serving runtimes ---------------------------------------------------------------------


class Pair:
    """A leader and a follower serving runtime (threads of this process) and a client for the API."""

    def __init__(self, leader: dict, follower: dict | None) -> None:
        from runtime.serve.step import start

        self.leader_cfg, self.follower_cfg = leader, follower
        self.leader = start(parse_config(leader), Recorder())
        self.follower = start(parse_config(follower), Recorder()) if follower else None
        self.channel = grpc.insecure_channel(self.leader.info["api_address"])
        self.api = pb_grpc.ServingApiStub(self.channel)
        if self.follower is not None:
            assert self.leader.side.connected.wait(30), "the follower did not connect"

    def predict(self, ids: list[str], features: dict[str, dict[str, str]] | None = None, **kw: Any) -> Any:
        req = pb.PredictRequest(ids=ids, features={k: pb.Features(values=v) for k, v in (features or {}).items()}, **kw)
        return self.api.Predict(req, metadata=[("authorization", f"Bearer {TOKEN}")], timeout=10)

    def close(self) -> None:
        self.channel.close()
        if self.follower is not None:
            self.follower.stop()
        self.leader.stop()


def serve_configs(pki, models: dict[str, Any], family: str, tmp: Path, **serve: Any) -> tuple[dict, dict]:
    ml, mf = models[family]
    leader, follower = _pair(pki, tmp, models["serve_leader_csv"], models["serve_follower_csv"], f"serve-{family}")
    leader["serve"] = {"model_dir": str(ml), "api_token": TOKEN, **serve}
    follower["serve"] = {"model_dir": str(mf), **serve}
    return leader, follower


@pytest.fixture(scope="module")
def nn_pair(pki, models, tmp_path_factory: pytest.TempPathFactory):
    # A generous deadline: this machine is shared, and only the frozen-follower test is about the deadline.
    leader, follower = serve_configs(
        pki, models, "nn", tmp_path_factory.mktemp("serve-nn"), report_every_s=0.2, deadline_ms=5000
    )
    pair = Pair(leader, follower)
    yield pair
    pair.close()


def test_nn_predictions_equal_the_whole_model(nn_pair: Pair, models) -> None:
    ids = [f"u{i:05d}" for i in range(0, 500, 5)]  # 100 ids every side has
    reply = nn_pair.predict(ids)
    assert [p.id for p in reply.predictions] == ids
    assert all(p.ok for p in reply.predictions)
    got = np.array([p.score for p in reply.predictions])
    np.testing.assert_allclose(got, whole_nn(models, ids), atol=1e-6)
    one = nn_pair.predict(["u00007"]).predictions[0]
    assert one.ok and abs(one.score - whole_nn(models, ["u00007"])[0]) < 1e-6
    assert len(set(np.round(got, 4))) > 20  # real scores, not one constant


def test_concurrent_requests_are_pipelined_and_each_gets_its_own_answer(nn_pair: Pair, models) -> None:
    ids = [f"u{i:05d}" for i in range(200)]
    want = dict(zip(ids, whole_nn(models, ids), strict=True))
    got: dict[str, float] = {}
    errors: list[BaseException] = []

    def worker(chunk: list[str]) -> None:
        try:
            for _ in range(3):
                for p in nn_pair.predict(chunk).predictions:
                    got[p.id] = p.score
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ids[k : k + 10],)) for k in range(0, 200, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert got.keys() == want.keys()
    assert max(abs(got[i] - want[i]) for i in ids) < 1e-6
    follower_stats = nn_pair.follower.stats.snapshot()
    assert follower_stats["predictions"] >= 600


def test_unknown_ids_get_a_clear_answer_per_id(nn_pair: Pair, models) -> None:
    reply = nn_pair.predict(["u00001", "u00585", "u00595", "nobody"])
    by = {p.id: p for p in reply.predictions}
    assert by["u00001"].ok
    assert not by["u00585"].ok and by["u00585"].reason == "unknown_to_partner" and by["u00585"].score == 0
    assert "unknown to the partner" in by["u00585"].error
    assert not by["u00595"].ok and by["u00595"].reason == "unknown_to_leader"
    assert not by["nobody"].ok and by["nobody"].reason == "unknown_to_leader"


def test_the_leader_may_supply_features_for_ids_it_has_not_registered(nn_pair: Pair, models) -> None:
    row = pd.read_csv(models["leader_csv"]).set_index("id").loc["u00595"]
    values = {k: str(row[k]) for k in ("l0", "l1", "l2", "lcat")}
    reply = nn_pair.predict(["u00595", "u00585"], {"u00595": values, "u00585": values})
    by = {p.id: p for p in reply.predictions}
    assert by["u00595"].ok
    assert abs(by["u00595"].score - whole_nn(models, ["u00595"])[0]) < 1e-6
    assert by["u00585"].reason == "unknown_to_partner"  # features on this side do not make up the partner's
    bad = nn_pair.predict(["u00595"], {"u00595": {**values, "l0": "lots"}}).predictions[0]
    assert not bad.ok and bad.reason == "bad_features" and "'l0' must be a number" in bad.error
    missing = nn_pair.predict(["u00595"], {"u00595": {"l0": "1"}}).predictions[0]
    assert missing.reason == "bad_features" and "'l1' is missing" in missing.error


def test_bad_calls_are_refused_with_the_reason(nn_pair: Pair) -> None:
    with pytest.raises(grpc.RpcError) as err:
        nn_pair.predict([])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at least one id" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        nn_pair.predict(["u00001"], {"u00002": {}})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "u00002" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        nn_pair.api.Predict(pb.PredictRequest(ids=["u00001"]), metadata=[("authorization", "Bearer nope")], timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_counts_are_audited_per_hour_on_both_sides(nn_pair: Pair) -> None:
    from runtime.serve.stats import hour_key

    before_l, before_f = nn_pair.leader.stats.snapshot(), nn_pair.follower.stats.snapshot()
    nn_pair.predict([f"u{i:05d}" for i in range(10)] + ["u00585"])
    after_l, after_f = nn_pair.leader.stats.snapshot(), nn_pair.follower.stats.snapshot()
    assert after_l["predictions"] - before_l["predictions"] == 10  # scores served
    assert after_f["predictions"] - before_f["predictions"] == 10  # rows the follower evaluated
    assert after_l["predictions_per_hour"][hour_key()] >= 10
    stats = nn_pair.api.Stats(pb.StatsRequest(), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=5)
    assert stats.partner_connected and stats.predictions == after_l["predictions"] and stats.p99_ms > 0


def test_the_store_is_searched_by_primary_key(nn_pair: Pair) -> None:
    store = nn_pair.follower.side.store
    plan = store.explain(3)
    assert "PRIMARY KEY" in plan and "SCAN" not in plan, plan
    assert store.rows == 590 and store.path.name == "features.sqlite"
    assert Path(nn_pair.follower_cfg["output_dir"], "serve", "features.sqlite").exists()


def test_tree_predictions_equal_the_whole_model(pki, models, tmp_path: Path) -> None:
    leader, follower = serve_configs(pki, models, "tree", tmp_path, deadline_ms=5000)
    pair = Pair(leader, follower)
    try:
        ids = [f"u{i:05d}" for i in range(0, 580, 7)]
        reply = pair.predict(ids)
        assert all(p.ok for p in reply.predictions)
        got = np.array([p.score for p in reply.predictions])
        np.testing.assert_allclose(got, whole_tree(models, ids), atol=1e-6)
        assert len(set(np.round(got, 6))) > 5
        by = {p.id: p for p in pair.predict(["u00583", "u00593"]).predictions}
        assert by["u00583"].reason == "unknown_to_partner" and by["u00593"].reason == "unknown_to_leader"
    finally:
        pair.close()


def test_mismatched_models_are_refused_on_both_sides(pki, models, tmp_path: Path) -> None:
    from runtime.serve.step import start

    leader, follower = serve_configs(pki, models, "nn", tmp_path)
    follower["serve"]["model_dir"] = str(models["tree"][1])
    lead = start(parse_config(leader), Recorder())
    try:
        fol = start(parse_config(follower), Recorder())
        deadline = time.monotonic() + 20
        while fol.side.fatal is None and time.monotonic() < deadline:
            time.sleep(0.05)
        fol.stop()
        assert "different models" in str(fol.side.fatal)
        assert not lead.side.partner_connected
    finally:
        lead.stop()


# -- a follower process that freezes, then dies ----------------------------------------------


def _spawn(raw: dict, path: Path) -> tuple[subprocess.Popen, Path]:
    path.write_text(json.dumps(raw))
    log = path.with_suffix(".log")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "serve", "--config", str(path)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return proc, log


def test_a_frozen_or_dead_follower_fails_predict_within_the_deadline(pki, models, tmp_path: Path) -> None:
    from runtime.serve.step import start

    leader, follower = serve_configs(pki, models, "nn", tmp_path, deadline_ms=200)
    lead = start(parse_config(leader), Recorder())
    proc, log = _spawn(follower, tmp_path / "follower.json")
    channel = grpc.insecure_channel(lead.info["api_address"])
    api = pb_grpc.ServingApiStub(channel)
    md = [("authorization", f"Bearer {TOKEN}")]

    def call() -> tuple[float, grpc.RpcError | None]:
        t0 = time.perf_counter()
        try:
            api.Predict(pb.PredictRequest(ids=["u00001"]), metadata=md, timeout=10)
        except grpc.RpcError as exc:
            return time.perf_counter() - t0, exc
        return time.perf_counter() - t0, None

    try:
        assert lead.side.connected.wait(90), log.read_text()[-2000:]
        assert call()[1] is None
        os.kill(proc.pid, signal.SIGSTOP)  # alive, connected, silent
        took, err = call()
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
        assert "did not answer within 200 ms" in err.details()
        assert 0.19 <= took < 0.5, took
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while lead.side.partner_connected and time.monotonic() < deadline:
            time.sleep(0.02)
        took, err = call()
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
        assert took < 0.25, took
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        channel.close()
        lead.stop()


def test_a_serving_runtime_stops_cleanly_on_sigterm(pki, models, tmp_path: Path) -> None:
    from runtime.serve.step import start

    leader, follower = serve_configs(pki, models, "tree", tmp_path, report_every_s=0.1)
    lead = start(parse_config(leader), Recorder())
    proc, log = _spawn(follower, tmp_path / "follower.json")
    try:
        assert lead.side.connected.wait(90), log.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-2000:]
        result = json.loads((tmp_path / "beta" / "result.json").read_text())
        assert result["serve"]["rows"] == 590 and result["serve"]["family"] == "tree"
        assert "api_address" not in result["serve"]
    finally:
        if proc.poll() is None:
            proc.kill()
        lead.stop()


# -- batch scoring (the `score` step of score jobs) against the same whole model -------------


@pytest.mark.parametrize("family", ["nn", "tree"])
def test_batch_scoring_equals_the_whole_model(pki, models, family: str, tmp_path: Path) -> None:
    """`python -m runtime score` with both halves writes the whole model's scores (1e-6) and its metrics."""
    from runtime.train import score
    from runtime.train.metrics import binary_metrics

    ids = [f"u{i:05d}" for i in range(3, 580, 3)]  # aligned on both sides, in this order
    ldf = pd.read_csv(models["leader_csv"]).set_index("id").loc[ids].reset_index()
    fdf = pd.read_csv(models["follower_csv"]).set_index("id").loc[ids].reset_index()
    lp, fp = tmp_path / "score-leader.csv", tmp_path / "score-follower.csv"
    ldf.to_csv(lp, index=False)
    fdf.to_csv(fp, index=False)
    ml, mf = models[family]
    leader, follower = _pair(pki, tmp_path, lp, fp, f"score-{family}")
    leader["score"] = {"model_dir": str(ml), "batch_size": 50}
    follower["score"] = {"model_dir": str(mf), "batch_size": 50}
    results = _train(score, leader, follower)
    out = pd.read_csv(tmp_path / "alpha" / "score" / "scores.csv")
    assert out["id"].tolist() == ids
    want = whole_nn(models, ids) if family == "nn" else whole_tree(models, ids)
    np.testing.assert_allclose(out["score"].to_numpy(), want, atol=1e-6)
    assert len(set(np.round(want, 6))) > 5  # real scores, not one constant
    assert not (tmp_path / "beta" / "score" / "scores.csv").exists()  # only the leader writes scores
    # The leader has the labels: its metrics are those of the whole model's scores.
    expected = binary_metrics(ldf["label"].to_numpy(), want)
    assert expected["auc"] > 0.6
    for key in ("auc", "ks", "loss"):
        assert results["leader"]["metrics"][key] == pytest.approx(expected[key], abs=1e-5), key
    assert results["leader"]["rows"] == results["follower"]["rows"] == len(ids)
    assert "scores_path" not in results["follower"] and "metrics" not in results["follower"]
