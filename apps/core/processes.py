"""Naming a process so another process on the same machine can tell whether it still runs.

A lease or claim records its holder as ``host:pid:start`` (``start``: the process's
start time in clock ticks, from /proc, so a reused pid is not mistaken for it). A
holder on another machine, or one whose liveness cannot be read, counts as alive:
only its expiry can free what it holds.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def this_process() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or ''}"


def is_gone(holder: str) -> bool:
    """True only if `holder` ran on this machine and no longer does."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    if not Path("/proc/self/stat").exists():
        return False  # cannot tell here
    ticks = _start_ticks(int(parts[1]))
    return ticks is None or (parts[2].isdigit() and ticks != int(parts[2]))
