"""Vertical split-NN training between a leader and a follower runtime over mutual TLS.

Most tests run both sides as threads of this process (TensorFlow loads once);
the kill tests run real `python -m runtime train` subprocesses and SIGKILL one.
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
from tests.runtime.helpers import Recorder, free_port, make_data, pair_configs, run_threads, spawn, wait_for

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
TRAIN = {
    "epochs": 4,
    "batch_size": 64,
    "learning_rate": 0.005,
    "bottom_layers": [16, 8],
    "top_layers": [8],
    "log_every_steps": 10,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("pki")
    return make_party(d, "alpha"), make_party(d, "beta")


def configs(
    pki,
    workdir: Path,
    leader_csv: Path,
    follower_csv: Path,
    train: dict | None = None,
    score: dict | None = None,
    job: str = "job-1",
):
    train = dict(TRAIN if train is None else train)
    common = {"job_id": job, "train": train, "score": score or {}}
    return pair_configs(pki, workdir, leader_csv, follower_csv, common)


def run_pair(leader: dict, follower: dict, command: str = "train") -> tuple[Any, Any, Recorder, Recorder]:
    """Run both sides as threads; each outcome is the result dict or the exception raised."""
    from runtime.train import score, step

    return run_threads(step if command == "train" else score, leader, follower)


def centralized_auc(leader_csv: Path, follower_csv: Path, train: dict) -> float:
    """The same network (same initial weights) trained by Keras on the joined data."""
    import keras

    from runtime.train.data import Preprocessor, read_table, split_for_training
    from runtime.train.metrics import binary_metrics
    from runtime.train.nn import build_centralized
    from runtime.train.params import parse_train_params
    from runtime.train.step import es_fraction

    p = parse_train_params(train)
    lt = read_table(str(leader_csv), "id", "label", need_label=True)
    ft = read_table(str(follower_csv), "id", None, need_label=False)
    tr, _es, va = split_for_training(len(lt.ids), p.validation_fraction, es_fraction(p), p.seed)
    xl = Preprocessor.fit(lt.features, tr, p.max_categories).transform(lt.features)
    xf = Preprocessor.fit(ft.features, tr, p.max_categories).transform(ft.features)
    x = np.concatenate([xl, xf], axis=1)
    keras.utils.set_random_seed(p.seed)  # Keras' own shuffling must not make the baseline a dice roll
    model = build_centralized(xl.shape[1], xf.shape[1], p, p, train_rows=len(tr))
    model.compile(optimizer=keras.optimizers.Adam(p.learning_rate), loss="binary_crossentropy")
    model.fit(x[tr], lt.labels[tr], batch_size=p.batch_size, epochs=p.epochs, shuffle=True, verbose=0)
    return binary_metrics(lt.labels[va], model.predict(x[va], verbose=0).ravel())["auc"]


@pytest.fixture(scope="module")
def trained(pki, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("trained")
    lp, fp = make_data(work / "data", 3000, seed=1)
    leader, follower = configs(pki, work, lp, fp)
    lres, fres, lrep, frep = run_pair(leader, follower)
    return work, lp, fp, leader, follower, lres, fres, lrep, frep


def test_federated_reaches_centralized_auc(trained) -> None:
    work, lp, fp, leader, follower, lres, fres, lrep, frep = trained
    assert not isinstance(lres, Exception), lres
    assert not isinstance(fres, Exception), fres
    val = lres["metrics"]["validation"]
    assert set(val) >= {"auc", "ks", "accuracy", "loss"}
    assert set(lres["metrics"]["train"]) >= {"auc", "ks", "accuracy", "loss"}
    assert lres["epochs"] == 4 and lres["rows"] == 3000
    central = centralized_auc(lp, fp, TRAIN)
    assert val["auc"] > 0.75
    print(f"federated auc {val['auc']:.4f}, centralized {central:.4f}")
    assert abs(val["auc"] - central) <= 0.01, (val["auc"], central)
    # the follower sees the shared metrics; both halves exported with a result file
    assert fres["metrics"]["validation"]["auc"] == pytest.approx(val["auc"])
    for side, res in (("alpha", lres), ("beta", fres)):
        model = work / side / "train" / "model"
        assert res["model_dir"] == str(model)
        assert (model / "saved_model.pb").exists() and (model / "preprocess.json").exists()
        assert json.loads((work / side / "train" / "result.json").read_text())["epochs"] == 4
        assert sorted(p.name for p in (work / side / "train" / "checkpoint").iterdir()) == [
            "epoch-0002",
            "epoch-0003",
            "epoch-0004",
        ]
        assert not [p for p in (work / side / "train").iterdir() if p.name.startswith(".")], "temporary files left"
    # live metrics: step losses, then per-epoch metrics for both splits, and progress
    metrics = [e for e in lrep.events if e["type"] == "metric"]
    assert any(e["name"] == "loss" and e["split"] == "train" and e["step"] for e in metrics)
    for split in ("train", "validation"):
        for name in ("loss", "auc", "ks", "accuracy"):
            assert [
                e["epoch"]
                for e in metrics
                if e["name"] == name and e["split"] == split and e["epoch"] and name != "loss"
            ] or name == "loss"
    assert {e["epoch"] for e in metrics if e["name"] == "auc" and e["split"] == "validation"} == {1, 2, 3, 4}
    assert any(e["type"] == "metric" and e["name"] == "auc" for e in frep.events)


def test_score_with_both_halves(trained, tmp_path: Path) -> None:
    work, _lp, _fp, leader, follower, lres, *_ = trained
    lp, fp = make_data(tmp_path / "new", 700, seed=2, prefix="n")
    leader = {
        **leader,
        "job_id": "score-1",
        "data": {**leader["data"], "path": str(lp)},
        "output_dir": str(tmp_path / "alpha"),
    }
    follower = {
        **follower,
        "job_id": "score-1",
        "data": {**follower["data"], "path": str(fp)},
        "output_dir": str(tmp_path / "beta"),
    }
    port = free_port()
    leader["listen_address"], follower["peer_address"] = f"127.0.0.1:{port}", f"127.0.0.1:{port}"
    leader["score"] = {"model_dir": str(work / "alpha" / "train" / "model"), "batch_size": 128}
    follower["score"] = {"model_dir": str(work / "beta" / "train" / "model"), "batch_size": 128}
    lres2, fres2, _, _ = run_pair(leader, follower, "score")
    assert not isinstance(lres2, Exception), lres2
    assert not isinstance(fres2, Exception), fres2
    scores = pd.read_csv(tmp_path / "alpha" / "score" / "scores.csv")
    assert list(scores.columns) == ["id", "score"]
    assert scores["id"].tolist() == [f"nu{i:05d}" for i in range(700)]
    assert scores["score"].between(0, 1).all()
    # fresh data from the same distribution scores about as well as the validation split
    assert abs(lres2["metrics"]["auc"] - lres["metrics"]["validation"]["auc"]) < 0.05
    # the same scores as the whole model (both halves) in one process
    np.testing.assert_allclose(scores["score"].to_numpy(), whole_nn_scores(work, leader, follower), atol=1e-6)


def whole_nn_scores(work: Path, leader: dict[str, Any], follower: dict[str, Any]) -> np.ndarray:
    """Both exported halves in one process: top(leader's bottom, follower's bottom) on each side's features."""
    import tensorflow as tf

    from runtime.train.data import Preprocessor, read_table

    outs = []
    for side, cfg in (("alpha", leader), ("beta", follower)):
        model_dir = work / side / "train" / "model"
        d = cfg["data"]
        table = read_table(d["path"], d["id_column"], d.get("label_column") or None, need_label=False)
        x = Preprocessor.from_json((model_dir / "preprocess.json").read_text()).transform(table.features)
        outs.append((tf.saved_model.load(str(model_dir)), x))
    (lm, lx), (fm, fx) = outs
    return lm.top(lm.bottom(tf.constant(lx)), fm.bottom(tf.constant(fx))).numpy().reshape(-1)


def test_misaligned_rows_fail_on_both_sides(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 400, seed=3)
    df = pd.read_csv(fp)
    df.iloc[[10, 11]] = df.iloc[[11, 10]].to_numpy()  # two rows swapped: same ids, different order
    df.to_csv(fp, index=False)
    lres, fres, _, _ = run_pair(*configs(pki, tmp_path, lp, fp))
    for res in (lres, fres):
        assert isinstance(res, DataError), res
        assert "misaligned" in str(res)
    assert not (tmp_path / "alpha" / "train" / "model").exists()
    assert not (tmp_path / "beta" / "train" / "result.json").exists()


def test_row_count_mismatch_fails_on_both_sides(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 400, seed=3)
    pd.read_csv(fp).iloc[:-1].to_csv(fp, index=False)
    lres, fres, _, _ = run_pair(*configs(pki, tmp_path, lp, fp))
    assert isinstance(lres, DataError) and "400 rows, the partner 399" in str(lres)
    assert isinstance(fres, DataError) and "misaligned" in str(fres)


def test_batch_hash_catches_misalignment_the_handshake_missed(
    pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.train import step

    monkeypatch.setattr(step, "ids_digest", lambda ids: b"same on both sides")
    lp, fp = make_data(tmp_path / "data", 400, seed=3)
    df = pd.read_csv(fp)
    df["id"] = [f"other{i}" for i in range(len(df))]
    df.to_csv(fp, index=False)
    lres, fres, _, _ = run_pair(*configs(pki, tmp_path, lp, fp))
    assert isinstance(lres, DataError) and "batch 0" in str(lres), lres
    assert isinstance(fres, DataError) and "misaligned" in str(fres), fres


def test_different_parameters_fail_on_both_sides(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 200, seed=3)
    leader, follower = configs(pki, tmp_path, lp, fp)
    follower["train"] = {**follower["train"], "batch_size": 32}
    lres, fres, _, _ = run_pair(leader, follower)
    for res in (lres, fres):
        assert isinstance(res, ConfigError) and "batch_size" in str(res), res


def test_bad_train_param_names_the_field(pki, tmp_path: Path) -> None:
    from runtime.train.params import parse_train_params

    with pytest.raises(ConfigError, match="train.optimizer"):
        parse_train_params({"optimizer": "lbfgs"})
    with pytest.raises(ConfigError, match="train.bottom_layers"):
        parse_train_params({"bottom_layers": [0]})
    with pytest.raises(ConfigError, match="train.early_stopping_fraction"):
        parse_train_params({"validation_fraction": 0.5, "early_stopping_fraction": 0.5})


def test_early_stopping_keeps_the_best_epoch_on_both_sides(pki, tmp_path: Path) -> None:
    """A high learning rate overfits fast: the exported halves and the reported metrics are the best epoch's."""
    lp, fp = make_data(tmp_path / "data", 1500, seed=6)
    train = {
        **TRAIN,
        "epochs": 40,
        "batch_size": 32,
        "learning_rate": 0.03,
        "bottom_layers": [64],
        "top_layers": [32],
        "l2_regularization": 0.0,
        "early_stopping_patience": 2,
        "early_stopping_fraction": 0.2,
        "validation_fraction": 0.2,
    }
    leader, follower = configs(pki, tmp_path, lp, fp, train)
    lres, fres, lrep, frep = run_pair(leader, follower)
    assert not isinstance(lres, Exception), lres
    assert not isinstance(fres, Exception), fres
    # given it stopped early, the kept epoch is the one `patience` epochs before the last
    assert lres["stopped_early"] and lres["epochs"] < 40
    best = lres["best_epoch"]
    assert best == lres["epochs"] - 2 and fres["best_epoch"] == best
    history = {h["epoch"]: h for h in lres["history"]}
    es_loss = {e: h["early_stopping"]["loss"] for e, h in history.items()}
    assert min(es_loss, key=lambda e: es_loss[e]) == best
    # the reported metrics are the kept epoch's, on both sides
    assert lres["metrics"]["validation"] == history[best]["validation"]
    assert lres["metrics"]["train"] == history[best]["train"]
    assert fres["metrics"]["validation"]["auc"] == pytest.approx(history[best]["validation"]["auc"])
    last_val_auc = history[lres["epochs"]]["validation"]["auc"]
    assert last_val_auc != pytest.approx(history[best]["validation"]["auc"], abs=1e-4)
    # three disjoint splits; early stopping never looked at the validation rows
    assert lres["train_rows"] + lres["early_stopping_rows"] + lres["validation_rows"] == 1500
    assert lres["early_stopping_rows"] == 300 and lres["validation_rows"] == 300
    assert {e["split"] for e in lrep.events if e["type"] == "metric"} == {"train", "validation", "early_stopping"}
    # the best epoch's checkpoint outlives the last-three pruning (a resume can still restore it)
    for side in ("alpha", "beta"):
        assert (tmp_path / side / "train" / "checkpoint" / f"epoch-{best:04d}").exists()
    # when: both exported halves score the training table, then the validation rows score as reported
    from runtime.train.data import split_for_training

    _tr, _es, val = split_for_training(1500, 0.2, 0.2, 42)
    score_leader = {**leader, "job_id": "score-es", "output_dir": str(tmp_path / "alpha-score")}
    score_follower = {**follower, "job_id": "score-es", "output_dir": str(tmp_path / "beta-score")}
    port = free_port()
    score_leader["listen_address"] = score_follower["peer_address"] = f"127.0.0.1:{port}"
    score_leader["score"] = {"model_dir": str(tmp_path / "alpha" / "train" / "model")}
    score_follower["score"] = {"model_dir": str(tmp_path / "beta" / "train" / "model")}
    sres, sfres, _, _ = run_pair(score_leader, score_follower, "score")
    assert not isinstance(sres, Exception), sres
    assert not isinstance(sfres, Exception), sfres
    scores = pd.read_csv(tmp_path / "alpha-score" / "score" / "scores.csv")["score"].to_numpy()
    labels = pd.read_csv(lp)["label"].to_numpy()
    from runtime.train.metrics import binary_metrics

    assert binary_metrics(labels[val], scores[val])["auc"] == pytest.approx(
        history[best]["validation"]["auc"], abs=1e-6
    )
    # when: the job runs again on the same folders, it resumes after the last epoch and exports the
    # best epoch again, now from its checkpoint (the in-memory copy is gone)
    port = free_port()
    leader["listen_address"] = follower["peer_address"] = f"127.0.0.1:{port}"
    lres2, fres2, _, _ = run_pair(leader, follower)
    assert not isinstance(lres2, Exception), lres2
    assert lres2["resumed_from"] == lres["epochs"] and lres2["best_epoch"] == fres2["best_epoch"] == best
    assert lres2["metrics"]["validation"] == history[best]["validation"]
    port = free_port()
    score_leader["listen_address"] = score_follower["peer_address"] = f"127.0.0.1:{port}"
    run_pair(score_leader, score_follower, "score")
    again = pd.read_csv(tmp_path / "alpha-score" / "score" / "scores.csv")["score"].to_numpy()
    np.testing.assert_allclose(again, scores, atol=1e-6)


def test_resume_agrees_on_the_last_common_checkpoint(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 600, seed=4)
    train = {**TRAIN, "epochs": 2}
    lres, fres, _, _ = run_pair(*configs(pki, tmp_path, lp, fp, train))
    assert lres["epochs"] == 2 and fres["epochs"] == 2
    # the follower died before writing epoch 2's checkpoint: both restart from epoch 1
    import shutil

    shutil.rmtree(tmp_path / "beta" / "train" / "checkpoint" / "epoch-0002")
    lres, fres, lrep, _ = run_pair(*configs(pki, tmp_path, lp, fp, {**train, "epochs": 3}))
    assert not isinstance(lres, Exception), lres
    assert lres["resumed_from"] == 1 and fres["resumed_from"] == 1
    assert lres["epochs"] == 3 and [h["epoch"] for h in lres["history"]] == [1, 2, 3]
    assert {e["epoch"] for e in lrep.events if e["type"] == "metric" and e["name"] == "auc"} == {2, 3}


# -- real processes -----------------------------------------------------------------
def _spawn(raw: dict, path: Path) -> tuple[subprocess.Popen, Path]:
    return spawn("train", raw, path, {"TF_CPP_MIN_LOG_LEVEL": "2"})


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 150) -> None:
    wait_for(log, text, proc, timeout, 0.1)


@pytest.mark.parametrize("victim", ["follower", "leader"])
def test_killed_side_fails_the_other_and_the_job_resumes(pki, tmp_path: Path, victim: str) -> None:
    lp, fp = make_data(tmp_path / "data", 2000, seed=5)
    train = {**TRAIN, "epochs": 200, "batch_size": 32}
    leader, follower = configs(pki, tmp_path, lp, fp, train)
    lproc, llog = _spawn(leader, tmp_path / "leader.json")
    fproc, flog = _spawn(follower, tmp_path / "follower.json")
    try:
        _wait_for(llog, "train: epoch 2/200", lproc)
        killed, survivor, slog = (fproc, lproc, llog) if victim == "follower" else (lproc, fproc, flog)
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        code = survivor.wait(60)
    finally:
        for p in (lproc, fproc):
            if p.poll() is None:
                p.kill()
                p.wait()
    text = slog.read_text(errors="replace")
    partner = victim
    assert code == 1, text[-3000:]
    assert (
        f"error: lost the connection to the {partner} runtime" in text
        or f"error: the {partner} runtime closed the connection" in text
    ), text[-3000:]
    assert not (tmp_path / "alpha" / "train" / "result.json").exists()
    # restart both: they agree on the last checkpoint both have and finish from there
    common = set(os.listdir(tmp_path / "alpha" / "train" / "checkpoint")) & set(
        os.listdir(tmp_path / "beta" / "train" / "checkpoint")
    )
    last = max(int(name[6:]) for name in common)
    assert last >= 1  # the follower checkpoints epoch 1 before it starts epoch 2
    lres, fres, _, _ = run_pair(*configs(pki, tmp_path, lp, fp, {**train, "epochs": last + 1}))
    assert not isinstance(lres, Exception), lres
    assert not isinstance(fres, Exception), fres
    assert lres["resumed_from"] == last and lres["epochs"] == last + 1
    assert (tmp_path / "beta" / "train" / "model" / "saved_model.pb").exists()


def test_follower_without_leader_fails_clearly(pki, tmp_path: Path) -> None:
    from runtime.train import step

    lp, fp = make_data(tmp_path / "data", 100, seed=6)
    _, follower = configs(pki, tmp_path, lp, fp, {**TRAIN, "connect_timeout_s": 1.5})
    with pytest.raises(PeerError, match="cannot reach the leader runtime"):
        step.run(parse_config(follower), Recorder())


def test_gradient_noise_and_private_metrics(pki, tmp_path: Path) -> None:
    lp, fp = make_data(tmp_path / "data", 500, seed=7)
    train = {**TRAIN, "epochs": 1, "gradient_noise_stddev": 0.05, "share_metrics": False}
    lres, fres, _, frep = run_pair(*configs(pki, tmp_path, lp, fp, train))
    assert not isinstance(lres, Exception), lres
    assert not isinstance(fres, Exception), fres
    assert 0.0 <= lres["metrics"]["validation"]["auc"] <= 1.0
    # without share_metrics the follower learns nothing about the labels' statistics
    assert fres["metrics"] == {"train": {}, "validation": {}}
    assert not [e for e in frep.events if e["type"] == "metric"]
