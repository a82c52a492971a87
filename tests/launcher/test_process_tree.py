"""A runtime's whole process tree dies with it: killing the runtime alone leaves no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.launcher.conftest import gone, spec, wait_finished, wait_for

pytestmark = pytest.mark.launcher

ROOT = Path(__file__).resolve().parents[2]


def test_killing_the_runtime_kills_what_it_started(launcher):
    # given a runtime with a child process
    handle = launcher.start(spec(fake={"sleep": 60, "child": True}))
    fake = Path(handle["output_dir"]) / "fake.json"
    info = json.loads(wait_for(lambda: fake.exists() and fake.read_text(), what="runtime start"))
    assert not gone(info["child_pid"])
    # when the runtime process alone is killed (not its group: an OOM kill, a crash)
    os.kill(info["pid"], signal.SIGKILL)
    # then its child goes too, and the exit is still recorded
    state = wait_finished(launcher, handle, timeout=15)
    assert state.exit_code == -signal.SIGKILL
    wait_for(lambda: gone(info["child_pid"]), timeout=10, what="the runtime's child to die")


POOL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from runtime.psi.builtin import _Pool
    pool = _Pool(2)
    pids = set()
    while len(pids) < 2:
        pids |= {f.result() for f in [pool.submit(os.getpid) for _ in range(8)]}
    print(" ".join(map(str, sorted(pids))), flush=True)
    time.sleep(120)
    """
)


@pytest.mark.timeout(60)
def test_psi_worker_processes_die_with_the_runtime():
    # given a runtime process with a pool of PSI worker processes
    proc = subprocess.Popen(
        [sys.executable, "-c", POOL_SCRIPT],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(workers) == 2 and all(not gone(p) for p in workers)
        # when the runtime is killed (no chance to shut its pool down)
        proc.kill()
        proc.wait(10)
        # then its workers exit within a moment, not hours later
        wait_for(lambda: all(gone(p) for p in workers), timeout=10, what="the pool's workers to die")
    finally:
        if proc.poll() is None:
            proc.kill()
