"""A runtime's helper processes die with it.

Every process the runtime starts (PSI worker pools, the libpsi worker) calls
`die_with_parent()` first: when the runtime goes — cancelled, killed, crashed —
its children follow within a fraction of a second instead of running on as
orphans. Two mechanisms, because each has a gap:

- Linux's ``PR_SET_PDEATHSIG``: the kernel sends SIGKILL when the parent dies.
  It fires when the *thread* that started the child exits, so it is used only
  where the caller says that thread lives as long as the runtime (`pdeathsig=True`).
- A daemon thread that polls the parent pid and exits the process when it changes.

The local launcher's supervisor also kills whatever is left in the runtime's
process group when the runtime ends (apps/jobs/launchers/supervise.py).
"""

from __future__ import annotations

import os
import signal
import threading

POLL_S = 0.25


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Linux: the kernel sends `sig` to this process when the thread that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the polling thread still covers it


def die_with_parent(parent: int | None = None, *, pdeathsig: bool = False) -> None:
    """Exit this process as soon as `parent` (default: the current parent) is gone."""
    parent = parent or os.getppid()
    if pdeathsig:
        set_pdeathsig()
    if os.getppid() != parent:
        os._exit(1)  # the parent died before we got here

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(POLL_S):
            if os.getppid() != parent:
                os._exit(1)  # no cleanup: the runtime that needed this work is gone

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
