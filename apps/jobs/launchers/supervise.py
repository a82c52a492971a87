"""Parent of a local runtime: runs it, enforces a deadline, and records its exit code.

    python -m apps.jobs.launchers.supervise --exit-file F --deadline S [--nice N] -- <runtime argv…>

The local launcher starts this in a new session, so it leads the process group
that a cancel kills. The exit file survives the worker that started it: a
reconciler reads it later to tell success from failure, even after a restart.
The runtime's whole process tree dies with it: when the runtime ends, however it
ends (even killed on its own), whatever it left in the group is killed before the
exit is recorded; and if this supervisor is killed, the kernel kills the runtime.
No Django here: this module must import nothing but the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

DEADLINE_EXIT = 124


def write_exit(path: str, code: int, reason: str = "") -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"code": code, "reason": reason, "finished_at": time.time()}, fh)
    os.replace(tmp, path)


def _set_pdeathsig() -> None:
    """In the runtime, before exec: the kernel kills it if this (single-threaded) supervisor dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _group_leftovers() -> list[int]:
    """Other live processes of this process group (the runtime's children it left behind)."""
    me, pgid = os.getpid(), os.getpgid(0)
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(name))
    return found


def kill_leftovers(grace_s: float = 2.0) -> int:
    """SIGTERM, then SIGKILL, whatever else is still in this process group; returns how many there were."""
    if os.getpgid(0) != os.getpid():
        return 0  # not a group leader (run by hand): the group is not ours to clean
    left = _group_leftovers()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and _group_leftovers():
            time.sleep(0.05)
        if not _group_leftovers():
            break
    return len(left)


def lower_priority(nice: int) -> None:
    """Run this process and all it starts `nice` steps nicer, before the runtime starts.

    On a machine shared with the installation, web, peer service and workers then stay
    responsive while jobs compute. With the kernel's autogroup scheduling (the default on
    desktop and many server kernels), a new session is its own scheduling group and a
    process's nice value counts only inside it, so the group's nice is lowered as well.
    """
    try:
        os.nice(nice)
    except OSError:
        pass
    try:
        with open("/proc/self/autogroup", "w", encoding="ascii") as fh:
            fh.write(str(nice))
    except OSError:
        pass  # no autogroup here (a container, another OS): the nice value above is what counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervise")
    parser.add_argument("--exit-file", required=True)
    parser.add_argument("--deadline", type=float, default=0.0, help="seconds; 0 means none")
    parser.add_argument("--nice", type=int, default=0, help="lower the runtime's CPU priority by this much")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    proc: subprocess.Popen | None = None
    stopped: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopped.append(signum)
        if proc is not None:
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass

    # First: a cancel may come the moment the launcher has started us, before the runtime exists.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if args.nice > 0:
        lower_priority(args.nice)
    if stopped:
        write_exit(args.exit_file, -stopped[0], "stopped before the runtime started")
        return 128 + stopped[0]
    proc = subprocess.Popen(command, preexec_fn=_set_pdeathsig)  # noqa: PLW1509 - this process runs no threads
    if stopped:  # the signal came while the runtime was being started
        forward(stopped[0], None)
    reason = ""
    try:
        code = proc.wait(timeout=args.deadline or None)
    except subprocess.TimeoutExpired:
        reason = f"error: the runtime ran past its deadline of {args.deadline:g} s and was stopped"
        print(reason, file=sys.stderr, flush=True)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        code = DEADLINE_EXIT
    kill_leftovers()
    write_exit(args.exit_file, code, reason)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
