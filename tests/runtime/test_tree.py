"""Vertical SecureBoost between a leader and a follower runtime over mutual TLS, with HEU.

Most tests run both sides as threads of this process; the kill test runs real
`python -m runtime tree` subprocesses and SIGKILLs the follower. Keys are 1024
bits and the data small, so the whole module stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from runtime.config import parse_config
from runtime.errors import ConfigError, DataError, PeerError
from tests.pki import make_party
from tests.runtime.helpers import Recorder, make_data, pair_configs, run_threads, spawn, wait_for

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
TREE = {"num_trees": 30, "max_depth": 3, "max_bin": 16, "learning_rate": 0.5, "early_stopping_rounds": 3}
TREE.update(key_bits=1024, peer_timeout_s=60, connect_timeout_s=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("pki")
    return make_party(d, "alpha"), make_party(d, "beta")


def configs(pki, workdir: Path, lp: Path, fp: Path, tree: dict | None = None, job: str = "job-t", **extra):
    common = {"job_id": job, "tree": dict(TREE if tree is None else tree), **extra}
    leader, follower = pair_configs(pki, workdir, lp, fp, common)
    leader["tree"], follower["tree"] = dict(common["tree"]), dict(common["tree"])
    return leader, follower


def run_pair(leader: dict, follower: dict, command: str = "tree") -> tuple[Any, Any, Recorder, Recorder]:
    from runtime.train import score
    from runtime.tree import step

    return run_threads(step if command == "tree" else score, leader, follower)


def central(lp: Path, fp: Path, tree: dict) -> tuple[dict[str, Any], list[str], list[str]]:
    """The same boosting on the joined data in one place, with the same bins."""
    from runtime.train.data import read_table, split_rows
    from runtime.tree import core
    from runtime.tree.binning import apply_bins, fit_bins
    from runtime.tree.params import parse_tree_params

    p = parse_tree_params(tree)
    lt = read_table(str(lp), "id", "label", need_label=True)
    ft = read_table(str(fp), "id", None, need_label=False)
    tr, va = split_rows(len(lt.ids), p.validation_fraction, p.seed)
    bl = apply_bins(lt.features, fit_bins(lt.features, tr, p.max_bin))
    bf = apply_bins(ft.features, fit_bins(ft.features, tr, p.max_bin))
    assert lt.labels is not None
    ref = core.train_central(bl, bf, lt.labels.astype(np.float64), tr, va, p)
    return ref, [str(c) for c in lt.features.columns], [str(c) for c in ft.features.columns]


@pytest.fixture(scope="module")
def trained(pki, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("trees")
    lp, fp = make_data(work / "data", 800, seed=3)
    leader, follower = configs(pki, work, lp, fp)
    lres, fres, lrep, frep = run_pair(leader, follower)
    return work, lp, fp, leader, follower, lres, fres, lrep, frep


def test_federated_trees_equal_central_trees(trained) -> None:
    work, lp, fp, leader, follower, lres, fres, lrep, frep = trained
    assert not isinstance(lres, Exception), lres
    assert not isinstance(fres, Exception), fres
    ref, lnames, fnames = central(lp, fp, TREE)
    lm = json.loads((work / "alpha" / "tree" / "model" / "model.json").read_text())
    fm = json.loads((work / "beta" / "tree" / "model" / "model.json").read_text())
    # early stopping kept the best iteration, on both sides, as the central run did
    assert lres["stopped_early"] and lres["trees_built"] > lres["trees"]
    assert lres["trees"] == fres["trees"] == len(lm["trees"]) == len(fm["trees"]) == len(ref["trees"])
    assert lres["trees"] == ref["best_iteration"] + 1
    owners = set()
    for t, (rt, tree) in enumerate(zip(ref["trees"], lm["trees"], strict=True)):
        fsplits = {s["node"]: s for s in fm["splits"] if s["tree"] == t}
        assert {nd["id"] for nd in tree["nodes"]} == set(rt["nodes"])
        for nd in tree["nodes"]:
            cn = rt["nodes"][nd["id"]]
            if "leaf" in nd:
                assert cn.leaf and nd["leaf"] == pytest.approx(cn.value, abs=1e-12)
                continue
            owners.add(nd["split"])
            assert nd["gain"] == pytest.approx(cn.gain, rel=1e-9)
            if nd["split"] == "leader":
                assert "feature" in nd and (cn.owner, lnames[cn.feature], cn.bin) == (
                    "leader",
                    nd["feature"],
                    nd["bin"],
                )
                assert nd["id"] not in fsplits
            else:
                f, k = rt["follower_splits"][nd["id"]]
                assert "feature" not in nd and "bin" not in nd  # the leader never learns the follower's split
                assert (fnames[f], k) == (fsplits[nd["id"]]["feature"], fsplits[nd["id"]]["bin"])
        assert set(fsplits) == set(rt["follower_splits"])
    assert owners == {"leader", "follower"}
    best = ref["history"][ref["best_iteration"]]
    assert lres["metrics"]["validation"]["auc"] == pytest.approx(best["validation"]["auc"])
    assert lres["metrics"]["validation"]["auc"] > 0.75


def test_halves_are_readable_json_with_importance_and_checkpoints(trained) -> None:
    work, lp, fp, leader, follower, lres, fres, lrep, frep = trained
    lm = json.loads((work / "alpha" / "tree" / "model" / "model.json").read_text())
    fm = json.loads((work / "beta" / "tree" / "model" / "model.json").read_text())
    assert lm["format"] == fm["format"] == "fedsite-tree/1" and lm["job_id"] == fm["job_id"] == "job-t"
    assert set(lm["feature_importance"]) <= {"l0", "l1", "l2", "lcat"}
    assert set(fm["feature_importance"]) <= {"f0", "f1", "f2", "f3", "fcat"}
    assert all(
        v["splits"] >= 1 and v["gain"] > 0 for v in {**lm["feature_importance"], **fm["feature_importance"]}.values()
    )
    assert sum(v["splits"] for v in fm["feature_importance"].values()) == len(fm["splits"])
    # numeric splits follow XGBoost's rule (value < cut goes left), categorical ones a set of values
    assert all(s["threshold"].startswith(("< ", "in {")) for s in fm["splits"])
    assert all(c.get("rule") == "lt" for c in fm["features"] if c["kind"] == "numeric")
    # nothing of the follower's bins is in the leader's half, and no leaf weight in the follower's
    assert "f0" not in json.dumps(lm) and "leaf" not in json.dumps(fm)
    built = lres["trees_built"]
    for side in ("alpha", "beta"):
        names = sorted(p.name for p in (work / side / "tree" / "checkpoint").glob("*.json"))
        assert names == sorted([f"tree-{built - 1}.json", f"tree-{built}.json"])
    # per-tree metrics reached both installations (shared by default)
    for rep in (lrep, frep):
        aucs = [e for e in rep.events if e["type"] == "metric" and e["name"] == "auc" and e["split"] == "validation"]
        assert [e["step"] for e in aucs] == list(range(1, built + 1))
        assert {"loss", "ks"} <= {e["name"] for e in rep.events if e["type"] == "metric"}


def test_score_with_both_halves(trained, pki, tmp_path: Path) -> None:
    work, lp, fp, leader, follower, lres, fres, *_ = trained
    lcfg, fcfg = configs(pki, tmp_path, lp, fp)
    for cfg, side in ((lcfg, "alpha"), (fcfg, "beta")):
        cfg["score"] = {"model_dir": str(work / side / "tree" / "model")}
    ls, fs, lrep, _ = run_pair(lcfg, fcfg, "score")
    assert not isinstance(ls, Exception), ls
    assert not isinstance(fs, Exception), fs
    scores = pd.read_csv(ls["scores_path"])
    assert len(scores) == 800 and scores["score"].between(0, 1).all()
    # the validation rows' scores give exactly the validation AUC training reported
    from runtime.train.data import split_rows
    from runtime.train.metrics import binary_metrics

    _, va = split_rows(800, 0.2, 42)
    y = pd.read_csv(lp)["label"].to_numpy()
    assert binary_metrics(y[va], scores["score"].to_numpy()[va])["auc"] == pytest.approx(
        lres["metrics"]["validation"]["auc"]
    )
    assert ls["metrics"]["auc"] > 0.75


def _fails_both(lres: Any, fres: Any, kind: type, leader_text: str, follower_text: str) -> None:
    assert isinstance(lres, kind), lres
    assert isinstance(fres, kind | PeerError), fres
    assert leader_text in str(lres), lres
    assert follower_text in str(fres), fres


def test_wrong_key_fails_both_sides(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 200, seed=4)
    leader, follower = configs(pki, tmp_path, lp, fp, tree={**TREE, "num_trees": 2})
    follower["tree"]["fault"] = "wrong_key"
    lres, fres, lrep, frep = run_pair(leader, follower)
    _fails_both(lres, fres, PeerError, "wrong key", "the partner (leader) failed: wrong key")


def test_tampered_ciphertext_count_fails_both_sides(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 200, seed=5)
    leader, follower = configs(pki, tmp_path, lp, fp, tree={**TREE, "num_trees": 2})
    leader["tree"]["fault"] = "tamper_count"
    lres, fres, *_ = run_pair(leader, follower)
    _fails_both(lres, fres, PeerError, "the partner (follower) failed", "ciphertexts where the message announces")


def test_misaligned_rows_fail_both_sides(pki, tmp_path: Path) -> None:
    lp, _ = make_data(tmp_path / "a", 200, seed=6)
    _, fp = make_data(tmp_path / "b", 200, seed=6, prefix="x")
    leader, follower = configs(pki, tmp_path, lp, fp)
    lres, fres, *_ = run_pair(leader, follower)
    for res in (lres, fres):
        assert isinstance(res, DataError) and "misaligned data" in str(res), res


def test_different_parameters_and_bad_values_are_named(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 100, seed=7)
    leader, follower = configs(pki, tmp_path, lp, fp)
    follower["tree"]["max_depth"] = 4
    lres, fres, *_ = run_pair(leader, follower)
    for res in (lres, fres):
        assert isinstance(res, ConfigError), res
        assert "max_depth: 3 here, 4 there" in str(res) or "max_depth: 4 here, 3 there" in str(res), res
    from runtime.tree.params import parse_tree_params

    with pytest.raises(ConfigError, match="tree.he_scheme: must be one of ou, paillier"):
        parse_tree_params({"he_scheme": "rsa"})
    with pytest.raises(ConfigError, match="tree.max_bin: must be from 2 to 127"):
        parse_tree_params({"max_bin": 300})


def test_paillier_and_regression(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 200, seed=8)
    df = pd.read_csv(lp)
    df["label"] = df["l0"] * 3 + pd.read_csv(fp)["f0"]  # a continuous target that needs both sides
    df.to_csv(lp, index=False)
    tree = {
        **TREE,
        "num_trees": 3,
        "objective": "reg:squarederror",
        "he_scheme": "paillier",
        "early_stopping_rounds": 0,
    }
    leader, follower = configs(pki, tmp_path, lp, fp, tree=tree)
    lres, fres, *_ = run_pair(leader, follower)
    assert not isinstance(lres, Exception), lres
    assert not isinstance(fres, Exception), fres
    hist = [h["train"]["rmse"] for h in lres["history"]]
    assert hist == sorted(hist, reverse=True) and hist[-1] < hist[0]
    assert lres["feature_importance"] and fres["feature_importance"]


def _spawn(raw: dict, path: Path) -> tuple[subprocess.Popen, Path]:
    return spawn("tree", raw, path)


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    wait_for(log, text, proc, timeout, 0.05)


def test_killed_follower_fails_the_leader_and_the_job_resumes(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 300, seed=9)
    tree = {**TREE, "num_trees": 40, "early_stopping_rounds": 0, "learning_rate": 0.05}
    leader, follower = configs(pki, tmp_path, lp, fp, tree=tree)
    lproc, llog = _spawn(leader, tmp_path / "leader.json")
    fproc, flog = _spawn(follower, tmp_path / "follower.json")
    try:
        _wait_for(flog, "tree: 2/40", fproc)
        fproc.send_signal(signal.SIGKILL)
        fproc.wait(10)
        assert lproc.wait(60) == 1
        text = llog.read_text()
        assert "follower runtime" in text and ("lost the connection" in text or "closed the connection" in text), text[
            -2000:
        ]
    finally:
        for p in (lproc, fproc):
            if p.poll() is None:
                p.kill()
    # run again: both sides resume from their last common checkpoint
    leader, follower = configs(pki, tmp_path, lp, fp, tree=tree)
    lres, fres, *_ = run_pair(leader, follower)
    assert not isinstance(lres, Exception), lres
    assert lres["resumed_from"] >= 2 and fres["resumed_from"] == lres["resumed_from"]
    assert lres["trees"] == fres["trees"] == 40 and len(lres["history"]) == 40


def test_the_link_carries_messages_beyond_grpcs_4_mb_default(pki, tmp_path: Path) -> None:
    from fedsite_proto.runtime.v1 import tree_pb2 as pb
    from runtime.tree.link import TreeFollowerLink, TreeLeaderLink

    leader, follower = configs(pki, tmp_path, tmp_path / "l.csv", tmp_path / "f.csv")
    big = os.urandom(6 * 1024 * 1024)  # a level of encrypted histograms easily exceeds 4 MB
    lead = TreeLeaderLink(parse_config(leader))
    foll = TreeFollowerLink(parse_config(follower), 10)
    try:
        lead.accept(10)
        foll.send(pb.FollowerMessage(level_answer=pb.LevelAnswer(histograms=[pb.NodeHistogram(ciphertexts=big)])))
        got = lead.recv(10, "a big level answer")
        assert got.level_answer.histograms[0].ciphertexts == big
        lead.send(pb.LeaderMessage(tree_start=pb.TreeStart(ciphertexts=big)))
        assert foll.recv(10, "big ciphertexts").tree_start.ciphertexts == big
    finally:
        foll.close(2)
        lead.close(2)


def _encrypted_histograms(scheme: str, slots: list[int]) -> tuple[Any, Any, list[tuple[np.ndarray, np.ndarray]], Any]:
    """The same encrypted cumulative histograms, packed `slots` sums per ciphertext, decrypted by the leader."""
    from runtime.tree import core
    from runtime.tree.he import KeyPair, PublicKey, load_ciphertexts

    rng = np.random.default_rng(11)
    n, f, nbins = 300, 5, 8
    g, h = rng.normal(size=n), rng.random(size=n)
    gq, hq, _ = core.quantize(g, h)
    bins = np.ascontiguousarray(rng.integers(0, nbins, size=(n, f)).astype(np.int8))
    kp = KeyPair(scheme, 1024)
    key = PublicKey(kp.public_key)
    ct = load_ciphertexts(kp.encrypt(gq, hq), n, "test")
    mask = (rng.random(n) < 0.6).astype(np.int8)
    out = []
    for k in slots:
        (blob,) = key.bucket_sums(ct, [mask], bins, nbins, k)
        out.append(kp.decrypt_sums(blob, f * nbins, k))
    clear = core.histograms(bins, np.flatnonzero(mask), gq, hq, nbins)
    return kp, key, out, clear


def test_packed_histogram_sums_equal_unpacked_ones() -> None:
    kp, key, (plain, two), clear = _encrypted_histograms("ou", [1, 2])
    assert key.max_slots >= 2
    np.testing.assert_array_equal(np.stack(plain), clear)
    np.testing.assert_array_equal(np.stack(two), clear)
    # the most the key holds (40 sums: 2 or more per ciphertext) gives the same sums too
    from runtime.tree.he import slots_for

    k = slots_for(40, key.max_slots)
    assert k >= 2
    _, _, (most,), _ = _encrypted_histograms("ou", [k])
    np.testing.assert_array_equal(np.stack(most), clear)


def test_packing_beyond_the_plaintext_headroom_is_refused() -> None:
    from runtime.tree.he import SLOT_BITS, HeadroomError, KeyPair, PublicKey, load_ciphertexts, plaintext_bits

    kp = KeyPair("ou", 1024)
    key = PublicKey(kp.public_key)
    too_many = key.max_slots + 1
    assert too_many * SLOT_BITS + 1 > plaintext_bits(key.kit)
    ct = load_ciphertexts(kp.encrypt(np.arange(4.0), np.ones(4)), 4, "test")
    bins = np.zeros((4, too_many), dtype=np.int8)
    with pytest.raises(HeadroomError, match=rf"packing {too_many} sums of {SLOT_BITS} bits .* refused"):
        key.bucket_sums(ct, [np.ones(4, dtype=np.int8)], bins, 1, too_many)
    # the leader refuses a histogram that announces more slots than its key holds, before decrypting
    with pytest.raises(HeadroomError, match="overflow"):
        kp.decrypt_sums(b"", too_many, too_many)


def test_numeric_bins_are_xgboosts_hist_cuts_so_the_trees_match_xgboost() -> None:
    """The runtimes' cut points are XGBoost hist's: boosting on our bins predicts as XGBoost on the raw data."""
    import xgboost as xgb

    from runtime.train.metrics import binary_metrics
    from runtime.tree import core
    from runtime.tree.binning import apply_bins, column_codes, fit_bins
    from runtime.tree.params import parse_tree_params

    rng = np.random.default_rng(5)
    n = 3000
    x = rng.normal(size=(n, 6))
    x[:, 5] = np.round(x[:, 5] * 2)  # few distinct values: ties at the cuts
    y = (rng.random(n) < 1 / (1 + np.exp(-(x[:, 0] - x[:, 1] * x[:, 2] + 0.5 * x[:, 5] - 2.5)))).astype(np.float64)
    df = pd.DataFrame(x, columns=[f"c{i}" for i in range(6)])
    tr, va = np.arange(0, 2400), np.arange(2400, n)
    p = parse_tree_params({"num_trees": 20, "max_depth": 4, "max_bin": 16, "early_stopping_rounds": 0})
    spec = fit_bins(df, tr, p.max_bin)
    dm = xgb.QuantileDMatrix(x[tr].astype(np.float32), max_bin=p.max_bin)
    ptr, vals = dm.get_quantile_cut()
    for j, c in enumerate(spec):
        np.testing.assert_array_equal(
            np.asarray(c["cuts"], dtype=np.float32), vals[int(ptr[j]) + 1 : int(ptr[j + 1]) - 1]
        )
    bins = apply_bins(df, spec)
    ref = core.train_central(bins[:, :3], bins[:, 3:], y, tr, va, p)
    booster = xgb.train(
        {
            "tree_method": "hist",
            "objective": "binary:logistic",
            "max_depth": 4,
            "eta": p.learning_rate,
            "max_bin": p.max_bin,
            "lambda": p.reg_lambda,
            "min_child_weight": p.min_child_weight,
            "base_score": float(np.mean(y[tr])),
        },
        xgb.DMatrix(x[tr].astype(np.float32), label=y[tr]),
        num_boost_round=p.num_trees,
    )
    ours = ref["history"][-1]["validation"]["auc"]
    theirs = binary_metrics(y[va], booster.predict(xgb.DMatrix(x[va].astype(np.float32))))["auc"]
    assert abs(ours - theirs) < 1e-4, (ours, theirs)
    # A spec written before the rule existed keeps its own: "bin <= k" is "value <= cuts[k]".
    old = {"name": "c", "kind": "numeric", "cuts": [0.0, 1.0]}
    new = {**old, "rule": "lt"}
    col = pd.Series([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan])
    assert column_codes(col, old).tolist() == [0, 0, 1, 1, 2, 0]
    assert column_codes(col, new).tolist() == [0, 1, 1, 2, 2, 0]


def test_shifted_encryptions_pack_by_addition_into_the_same_sums() -> None:
    """The leader's encryptions times 2**108j, summed per feature group and added: the clear sums again."""
    from runtime.tree import core
    from runtime.tree.he import KeyPair, PublicKey, load_ciphertexts, shifted_copies

    rng = np.random.default_rng(12)
    n, f, nbins = 300, 6, 8
    gq, hq, _ = core.quantize(rng.normal(size=n), rng.random(size=n))
    bins = np.ascontiguousarray(rng.integers(0, nbins, size=(n, f)).astype(np.int8))
    kp = KeyPair("ou", 1024)
    key = PublicKey(kp.public_key)
    k = 3
    assert kp.max_slots >= k
    cts = [load_ciphertexts(kp.encrypt(gq, hq, j), n, "test") for j in range(k)]
    masks = [(rng.random(n) < 0.5).astype(np.int8), np.ones(n, dtype=np.int8)]
    blobs = key.bucket_sums_shifted(cts, masks, bins, nbins)
    for mask, blob in zip(masks, blobs, strict=True):
        got = np.stack(kp.decrypt_sums(blob, f * nbins, k))
        np.testing.assert_array_equal(got, core.histograms(bins, np.flatnonzero(mask), gq, hq, nbins))
    # features that do not split into the groups are refused, as is a shift beyond the headroom
    with pytest.raises(PeerError, match="5 features do not split into 3 shifted groups"):
        key.bucket_sums_shifted(cts, masks, np.ascontiguousarray(bins[:, :5]), nbins)
    with pytest.raises(PeerError, match="refused"):
        kp.encrypt(gq, hq, kp.max_slots)
    # the cost model shifts when decryptions dominate, not when encryptions would
    assert shifted_copies(80_000, 300, 32, 5, 6) > 1
    assert shifted_copies(800, 5, 16, 3, 3) == 1


def test_forced_packing_trains_the_same_trees(pki, tmp_path: Path) -> None:
    """pack_slots=5 (shifted encryptions: 5 follower features, 2048-bit key) and 1 (none) give the same model."""
    lp, fp = make_data(tmp_path / "data", 300, seed=13)
    out = {}
    for k in (1, 5):
        tree = {**TREE, "num_trees": 3, "early_stopping_rounds": 0, "pack_slots": k, "key_bits": 2048}
        leader, follower = configs(pki, tmp_path / f"k{k}", lp, fp, tree=tree, job=f"job-pack-{k}")
        lres, fres, *_ = run_pair(leader, follower)
        assert not isinstance(lres, Exception), lres
        assert not isinstance(fres, Exception), fres
        assert {h["pack_slots"] for h in lres["history"]} == {k}
        assert {h["shifted_copies"] for h in lres["history"]} == {k}  # packed by addition, not shifts
        out[k] = json.loads((tmp_path / f"k{k}" / "alpha" / "tree" / "model" / "model.json").read_text())
    assert out[1]["trees"] == out[5]["trees"]
