"""Helpers shared by the two-party runtime tests (split NN, trees): data, ports, configs, running both sides."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.config import parse_config
from runtime.report import Reporter
from tests.pki import tls_config

ROOT = Path(__file__).resolve().parents[2]


class Recorder(Reporter):
    """A reporter that keeps its events for assertions."""

    def __init__(self) -> None:
        super().__init__(None)
        self.events: list[dict[str, Any]] = []

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A free port whose next port is free too (a runtime running join and training listens on both)."""
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def make_data(directory: Path, n: int, seed: int, prefix: str = "") -> tuple[Path, Path]:
    """Leader: 3 numbers + 1 category + label; follower: 4 numbers + 1 category. The label needs both."""
    rng = np.random.default_rng(seed)
    xl = rng.normal(size=(n, 3))
    xf = rng.normal(size=(n, 4))
    cl = rng.choice(["a", "b", "c"], size=n)
    cf = rng.choice(["x", "y", "z", "w"], size=n)
    z = (
        1.2 * xl[:, 0]
        - 0.8 * xl[:, 1]
        + 1.0 * xf[:, 0]
        + 0.9 * xf[:, 1] * xl[:, 2]
        + (cl == "a")
        - 0.8 * (cf == "x")
        + 0.5 * np.sin(2 * xf[:, 2])
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * z))).astype(int)
    ids = [f"{prefix}u{i:05d}" for i in range(n)]
    leader = pd.DataFrame({"id": ids, **{f"l{i}": xl[:, i] for i in range(3)}, "lcat": cl, "label": y})
    follower = pd.DataFrame({"id": ids, **{f"f{i}": xf[:, i] for i in range(4)}, "fcat": cf})
    directory.mkdir(parents=True, exist_ok=True)
    lp, fp = directory / "leader.csv", directory / "follower.csv"
    leader.to_csv(lp, index=False)
    follower.to_csv(fp, index=False)
    return lp, fp


def pair_configs(
    pki: tuple[Any, Any],
    workdir: Path,
    leader_csv: Path,
    follower_csv: Path,
    common: dict[str, Any],
    *,
    id_column: str = "id",
    label_column: str = "label",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Raw job configs of the leader (alpha, listening) and the follower (beta) on a free loopback port."""
    alpha, beta = pki
    port = free_port()
    leader = {
        **common,
        "role": "leader",
        "listen_address": f"127.0.0.1:{port}",
        "tls": tls_config(alpha, beta),
        "data": {"path": str(leader_csv), "id_column": id_column, "label_column": label_column},
        "output_dir": str(workdir / "alpha"),
    }
    follower = {
        **common,
        "role": "follower",
        "peer_address": f"127.0.0.1:{port}",
        "tls": tls_config(beta, alpha),
        "data": {"path": str(follower_csv), "id_column": id_column},
        "output_dir": str(workdir / "beta"),
    }
    return leader, follower


def run_threads(
    module: Any, leader: dict, follower: dict, *, during: Any = None, timeout: float = 120
) -> tuple[Any, Any, Recorder, Recorder]:
    """Run `module.run` for both sides as threads (calling `during()` while they run); each outcome is the
    result dict or the exception raised."""
    out: dict[str, Any] = {}
    reps = {"leader": Recorder(), "follower": Recorder()}

    def go(name: str, raw: dict) -> None:
        try:
            out[name] = module.run(parse_config(raw), reps[name])
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[name] = exc

    threads = [threading.Thread(target=go, args=(k, v)) for k, v in (("leader", leader), ("follower", follower))]
    for t in threads:
        t.start()
    if during:
        during()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a side hung"
    return out["leader"], out["follower"], reps["leader"], reps["follower"]


def spawn(command: str, raw: dict, path: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """`python -m runtime COMMAND --config PATH` with `raw` as the config, its output in PATH.log."""
    path.write_text(json.dumps(raw))
    log = path.with_suffix(".log")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", command, "--config", str(path)],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    return proc, log


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float, poll: float) -> None:
    """Until `text` appears in `log`; fails with the log's tail when the process ends first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(poll)
    raise AssertionError(f"{text!r} never appeared in {log}")
