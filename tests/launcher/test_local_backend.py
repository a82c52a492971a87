"""The local backend with real subprocesses: success, failure, cancel, a worker killed mid-job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from apps.jobs.launchers.base import FAILED, MISSING, SUCCEEDED, error_summary
from apps.jobs.launchers.local import LocalLauncher, is_alive
from tests.launcher.conftest import gone, spec, wait_finished, wait_for

pytestmark = pytest.mark.launcher

ROOT = Path(__file__).resolve().parents[2]


def test_success_writes_config_log_and_exit_code(launcher):
    handle = launcher.start(spec(fake={"sleep": 0.1}))
    cfg_path = Path(handle["config"])
    assert oct(cfg_path.stat().st_mode & 0o777) == "0o600"  # it holds the job token
    assert os.getpgid(handle["pid"]) == handle["pid"]  # its own process group
    state = wait_finished(launcher, handle)
    assert state.state == SUCCEEDED and state.exit_code == 0
    assert "fake runtime: leader step(s) psi" in launcher.log_tail(handle)
    assert json.loads(Path(handle["exit_file"]).read_text())["code"] == 0
    info = json.loads((Path(handle["output_dir"]) / "fake.json").read_text())
    assert info["pgid"] == handle["pid"]


def test_failure_reports_the_last_error_line(launcher):
    handle = launcher.start(spec(fake={"exit": 1, "message": "error: the partner's runtime hung up"}))
    state = wait_finished(launcher, handle)
    assert state.state == FAILED and state.exit_code == 1
    assert state.error == "error: the partner's runtime hung up"


def test_the_real_runtime_cli_with_a_bad_config_fails_with_its_message(launcher, settings):
    settings.FEDSITE_RUNTIME_COMMAND = None  # the real `python -m runtime`
    s = spec()
    s.config.pop("allow_insecure")  # no TLS and no allow_insecure: the runtime refuses the config
    handle = launcher.start(s)
    state = wait_finished(launcher, handle, timeout=60)
    assert state.state == FAILED and state.exit_code == 2
    assert state.error.startswith("error: tls: required")


def test_cancel_kills_the_whole_process_group(launcher):
    handle = launcher.start(spec(fake={"sleep": 60, "child": True}))
    info_file = Path(handle["output_dir"]) / "fake.json"
    info = json.loads(wait_for(lambda: info_file.exists() and info_file.read_text(), what="fake runtime start"))
    assert launcher.poll(handle).state == "running"
    launcher.stop(handle, grace_s=2.0)
    assert gone(handle["pid"]) and gone(info["pid"]) and gone(info["child_pid"])
    state = launcher.poll(handle)
    assert state.state == FAILED and state.exit_code == -signal.SIGTERM
    launcher.stop(handle)  # idempotent


def test_a_cancel_the_moment_it_started_still_records_how_it_ended(launcher):
    # The job shows "starting" as soon as the supervisor process exists; a cancel can come
    # before the supervisor has even set up its signal handlers.
    handle = launcher.start(spec(fake={"sleep": 60, "child": True}))
    launcher.stop(handle, grace_s=2.0)
    assert gone(handle["pid"])
    state = launcher.poll(handle)
    assert state.state == FAILED and state.exit_code in (-signal.SIGTERM, -signal.SIGKILL), state
    assert Path(handle["exit_file"]).exists()


def test_stop_ignores_a_reused_pid(launcher):
    handle = launcher.start(spec(fake={"sleep": 0}))
    wait_finished(launcher, handle)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        fake = {**handle, "pid": other.pid, "pgid": other.pid}  # same pid, different start time
        assert not is_alive(other.pid, handle["start_ticks"])
        launcher.stop(fake)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_deadline_stops_a_runtime_that_runs_too_long(launcher):
    s = spec(fake={"sleep": 30})
    s.timeout_s = 1
    handle = launcher.start(s)
    state = wait_finished(launcher, handle, timeout=20)
    assert state.state == FAILED and state.exit_code == 124
    assert "deadline of 1 s" in state.error


WORKER = textwrap.dedent(
    """
    import json, os, signal, sys
    import django
    os.environ["DJANGO_SETTINGS_MODULE"] = "fedsite.settings_test"
    django.setup()
    from django.conf import settings
    settings.FEDSITE_RUNTIME_COMMAND = [sys.executable, sys.argv[2]]
    from apps.jobs.launchers.local import LocalLauncher
    from tests.launcher.conftest import spec
    handle = LocalLauncher(sys.argv[1]).start(spec(fake={"sleep": float(sys.argv[3])}))
    print(json.dumps(handle), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-job
    """
)


def _start_in_doomed_worker(jobs_dir: Path, sleep: float) -> dict:
    from tests.launcher.conftest import FAKE_RUNTIME

    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(jobs_dir), str(FAKE_RUNTIME), str(sleep)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_outlives_a_killed_worker_and_a_new_worker_reads_its_exit(runtime_env):
    jobs_dir = Path(runtime_env.FEDSITE_JOBS_DIR)
    handle = _start_in_doomed_worker(jobs_dir, sleep=1.0)
    restarted = LocalLauncher(jobs_dir)  # a new worker process knows only the stored handle
    assert restarted.poll(handle).state == "running"
    state = wait_finished(restarted, handle)
    assert state.state == SUCCEEDED


def test_runtime_killed_while_no_worker_ran_is_reported_missing(runtime_env):
    jobs_dir = Path(runtime_env.FEDSITE_JOBS_DIR)
    handle = _start_in_doomed_worker(jobs_dir, sleep=60)
    os.killpg(handle["pgid"], signal.SIGKILL)  # e.g. the machine's OOM killer, with no worker watching
    wait_for(lambda: gone(handle["pid"]), what="runtime gone")
    state = LocalLauncher(jobs_dir).poll(handle)
    assert state.state == MISSING
    assert "disappeared without an exit status" in state.error


def test_error_summary():
    assert error_summary("a\nERROR x: boom\nb\n", 1) == "ERROR x: boom"
    assert error_summary("all fine\n", 3) == "the runtime exited with code 3"
    assert error_summary("", -9) == "the runtime was killed by signal 9"
    # The log's own prefix is not part of the reason.
    logged = "2026-11-25 06:40:00,123 ERROR fedsite.runtime: error: data.path: no such file x.csv\n"
    assert error_summary(logged, 2) == "error: data.path: no such file x.csv"
    pod = "2026-11-25T06:40:00.123456789Z error: psi.protocol: must be one of ecdh, rsa\n"
    assert error_summary(pod, 2) == "error: psi.protocol: must be one of ecdh, rsa"


def test_the_worker_hears_at_once_when_its_runtime_ends(runtime_env):
    import threading

    ended = threading.Event()
    launcher = LocalLauncher(on_exit=ended.set)
    handle = launcher.start(spec(fake={"sleep": 0.2}))
    assert ended.wait(20)
    assert launcher.poll(handle).state == SUCCEEDED


def test_kill_all_stops_every_runtime_of_a_jobs_folder(launcher, runtime_env):
    from apps.jobs.launchers.local import kill_all

    handles = [launcher.start(spec(fake={"sleep": 60})) for _ in range(2)]
    done = launcher.start(spec(fake={"sleep": 0}))
    wait_finished(launcher, done)
    wait_for(lambda: gone(done["pid"]), what="the supervisor to exit after writing its exit file")
    assert kill_all(runtime_env.FEDSITE_JOBS_DIR) == 2
    for handle in handles:
        wait_for(lambda h=handle: gone(h["pid"]), what="killed")


def test_a_worker_on_another_machine_never_judges_or_kills_the_run(launcher):
    from apps.jobs.launchers.base import LaunchError

    handle = launcher.start(spec(fake={"sleep": 0}))
    elsewhere = {**handle, "host": "some-other-host"}
    with pytest.raises(LaunchError, match="runs on some-other-host"):
        launcher.poll(elsewhere)
    with pytest.raises(LaunchError):
        launcher.stop(elsewhere)
    assert wait_finished(launcher, handle).state == SUCCEEDED
