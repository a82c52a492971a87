"""``python -m runtime psi``: align this side's ids with the partner's.

Contract: ``run(cfg, reporter) -> dict`` with ``engine``, ``protocol``,
``input_size``, ``peer_input_size``, ``intersection_size`` and ``seconds``;
``{output_dir}/psi/aligned.csv`` (own columns only, id first, the same row
order on both sides) and ``{output_dir}/psi/stats.json`` are written atomically.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from runtime.config import JobConfig
from runtime.errors import ConfigError
from runtime.psi import libpsi_engine
from runtime.report import Reporter


def run(cfg: JobConfig, reporter: Reporter) -> dict[str, Any]:
    if "pyarrow" not in sys.modules:
        # Arrow's buffers from the C library's allocator, which gives freed memory back (see
        # libpsi_engine.trim): with Arrow's own pool, the ids read and checked before the protocol
        # stayed in the runtime's memory (about 0.3 GB at 10M ids) while libpsi ran beside it.
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    # First, before the heavier modules below are imported: libpsi loads meanwhile.
    worker = libpsi_engine.prestart(cfg)
    try:
        return _run(cfg, reporter, worker)
    finally:
        if worker is not None:
            worker.close(0)


def _run(cfg: JobConfig, reporter: Reporter, worker: libpsi_engine.Worker | None) -> dict[str, Any]:
    from runtime.psi import partition
    from runtime.psi.builtin import run_builtin
    from runtime.psi.common import parse_params

    if partition.partitions_of(cfg) > 1:
        return partition.run(cfg, reporter)  # psi.partitions: P pairs of ordinary PSI (runtime/psi/partition.py)
    cfg = partition.engine_config(cfg)
    params = parse_params(cfg.psi)
    if params.engine == "builtin" and params.protocol in ("rr22", "kkrt"):
        raise ConfigError(f"psi.protocol: {params.protocol!r} runs only on the libpsi engine (psi.engine is 'builtin')")
    if params.engine == "libpsi" and params.protocol == "rsa":
        raise ConfigError("psi.protocol: 'rsa' runs only on the built-in engine (psi.engine is 'libpsi')")
    if params.engine == "libpsi":
        why = libpsi_engine.available()
        if why is not None:
            raise ConfigError(f"psi.engine: 'libpsi' was requested but {why}")
    stats = run_builtin(cfg, params, reporter, worker)
    reporter.log(
        f"psi: {stats['intersection_size']} common ids of {stats['input_size']} here and {stats['peer_input_size']} at the partner ({stats['engine']} engine, {stats['protocol']}, {stats['seconds']}s)"
    )
    return stats
