"""The libpsi engine: SecretFlow's libpsi (``spu.psi``) for RR22, KKRT and ECDH.

The two runtimes agree on engine and protocol over the built-in engine's gRPC
``Hello`` (mTLS); then each runs ``psi_execute`` over a ``spu.libspu.link``
brpc link with TLS from the same certificates (each side presents its own
certificate and verifies the partner's against the pinned CA). libpsi runs in a
child process: a cancel (kill) stops it at once, and brpc's occasional abort
while tearing the link down cannot take the runtime with it once the result is
in. libpsi reads the registered CSV itself; its output (own columns, rows
sorted by id) becomes ``aligned.csv`` with the id column first.

Link addresses: each side's link listens on a free port it announces in
``Hello`` (the leader's can be fixed with ``psi.link_port``, e.g. for a
Kubernetes Service). Both must be reachable from the partner.
"""

from __future__ import annotations

import csv
import functools
import json
import multiprocessing
import os
import queue
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.config import JobConfig
from runtime.errors import DataError, PeerError
from runtime.lifeline import die_with_parent
from runtime.psi.data import atomic_file
from runtime.report import Reporter

PROTOCOLS = ("rr22", "kkrt", "ecdh")
_ENUM = {"rr22": "PROTOCOL_RR22", "kkrt": "PROTOCOL_KKRT", "ecdh": "PROTOCOL_ECDH"}


@functools.lru_cache(maxsize=1)
def available() -> str | None:
    """None when libpsi can run here, else why not (named in the fallback message)."""
    if os.environ.get("FEDSITE_PSI_NO_LIBPSI"):
        return "disabled by FEDSITE_PSI_NO_LIBPSI"
    try:
        import spu.libspu.link  # noqa: F401
        import spu.psi  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not here"
        return f"spu (libpsi) cannot be imported: {exc.__class__.__name__}: {exc}"
    return None


class Worker:
    """A spawned process that loads libpsi at once and then runs one ``psi_execute``."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.specs: multiprocessing.Queue = ctx.Queue()
        self.events: multiprocessing.Queue = ctx.Queue()
        self.proc = ctx.Process(
            target=_worker_main, args=(self.specs, self.events, os.getpid()), name="libpsi", daemon=True
        )
        self.proc.start()
        self.used = False

    def start(self, spec: dict[str, Any]) -> None:
        self.used = True
        self.specs.put(spec)

    def close(self, wait_s: float = 0.5) -> None:
        if self.proc.is_alive() and not self.used:
            self.specs.put(None)
        self.proc.join(wait_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def _worker_main(specs: multiprocessing.Queue, out: multiprocessing.Queue, parent: int) -> None:
    # Killed with the runtime (a cancel kills it). The worker is started from the runtime's
    # main thread, so the kernel's parent-death signal is safe to use here.
    die_with_parent(parent, pdeathsig=True)
    t0 = time.monotonic()
    try:
        from spu import psi  # noqa: F401
        from spu.libspu import link  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - sent to the parent
        out.put(("error", f"cannot load libpsi: {exc}"))
        return
    out.put(("log", f"libpsi: loaded in {time.monotonic() - t0:.1f}s"))
    spec = specs.get()
    if spec is None:
        return
    _child(spec, out)


class PortHold:
    """A free port kept bound (not listening) until libpsi's link listens on it.

    Binding a port only to learn a free number and closing it at once lets another
    process take it before brpc binds it. The held socket has SO_REUSEADDR, as
    brpc's listening socket does, so brpc can bind beside it; any other program
    (and the kernel's choice of ephemeral ports) keeps away from it meanwhile.
    """

    def __init__(self, host: str, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host or "0.0.0.0", port))
        except OSError:
            self.sock.close()
            raise
        self.port: int = self.sock.getsockname()[1]

    def release(self) -> None:
        self.sock.close()


def csv_is_plain(path: str) -> bool:
    """libpsi splits CSV lines on commas (``sort --field-separator=,``): no quoted fields, no CRs."""
    import mmap

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return True
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return m.find(b'"') < 0 and m.find(b"\r") < 0
    except OSError:
        return False


def _child(spec: dict[str, Any], out: multiprocessing.Queue) -> None:
    """Runs in the worker: one psi_execute, then the two sides' reports via the link."""
    from spu import psi
    from spu.libspu import link

    desc = link.Desc()
    desc.id = spec["job_id"]
    for name, addr in spec["parties"]:
        desc.add_party(name, addr)
    desc.connect_retry_interval_ms = 250
    desc.connect_retry_times = max(4, int(min(spec["timeout_s"], 600) * 4))
    desc.recv_timeout_ms = int(spec["timeout_s"] * 1000)
    if spec["tls"]:
        cert, key, ca = spec["tls"]
        desc.enable_ssl = True
        for opts in (desc.server_ssl_opts, desc.client_ssl_opts):
            opts.cert.certificate_path = cert
            opts.cert.private_key_path = key
            opts.verify.ca_file_path = ca
            opts.verify.verify_depth = 1
    try:
        t0 = time.monotonic()
        ctx = link.create_brpc(desc, spec["rank"])
        ctx.barrier()  # both sides reachable and the TLS handshake done
        out.put(
            (
                "log",
                f"libpsi: link to the partner up in {time.monotonic() - t0:.1f}s ({'TLS' if spec['tls'] else 'plaintext'})",
            )
        )
        proto = getattr(psi.PsiProtocol, _ENUM[spec["protocol"]])
        pconf = psi.PsiProtocolConfig(protocol=proto, receiver_rank=0, broadcast_result=True)
        if spec["protocol"] == "ecdh":
            pconf.ecdh_params = psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519, batch_size=4096)
        conf = psi.PsiExecuteConfig(
            protocol_conf=pconf,
            input_params=psi.InputParams(path=spec["input"], selected_keys=[spec["id_column"]], keys_unique=False),
            output_params=psi.OutputParams(path=spec["output"], disable_alignment=False),
            checkpoint_conf=psi.CheckpointConfig(enable=False),
        )

        def hook(p) -> None:
            out.put(("progress", p.percentage))

        rep = psi.psi_execute(conf, ctx, psi.ProgressParams(hook=hook, interval_ms=500))
        mine = {"n": rep.original_count, "unique": rep.original_unique_count, "inter": rep.intersection_count}
        both = [json.loads(x) for x in ctx.all_gather(json.dumps(mine))]
        out.put(("result", {"mine": mine, "peer": both[1 - spec["rank"]]}))
        ctx.stop_link()
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which reports it
        out.put(("error", f"{exc.__class__.__name__}: {exc}"))


def run_libpsi(
    cfg: JobConfig,
    protocol: str,
    parties: list[tuple[str, str]],
    reporter: Reporter,
    started: float,
    worker: Worker | None = None,
    cancelled: Callable[[], BaseException | None] | None = None,
    port_hold: PortHold | None = None,
) -> dict[str, Any]:
    """Run libpsi as this side of an agreed session; write aligned.csv and return stats.

    `port_hold` keeps this side's link port until the link is up (then it is released).
    """
    from runtime.psi.common import Output
    from runtime.psi.data import Table

    table = Table(cfg.data.path, cfg.data.id_column)
    if table.is_parquet:
        raise DataError("data.path: the libpsi engine reads CSV only")
    output = Output(cfg)
    work = output.root / "checkpoint"
    work.mkdir(parents=True, exist_ok=True)
    raw_out = work / "libpsi-output.csv"
    tls = None
    if cfg.tls is not None:
        tls = (
            str(Path(cfg.tls.cert_file).resolve()),
            str(Path(cfg.tls.key_file).resolve()),
            str(Path(cfg.tls.peer_ca_file).resolve()),
        )
    spec: dict[str, Any] = {
        "job_id": cfg.job_id,
        "parties": parties,
        "rank": 0 if cfg.is_leader else 1,
        "protocol": protocol,
        "input": str(_job_input(Path(cfg.data.path), work)),
        "id_column": cfg.data.id_column,
        "output": str(raw_out),
        "tls": tls,
        "timeout_s": cfg.timeout_s,
    }
    worker = worker or Worker()
    worker.start(spec)
    q, proc = worker.events, worker.proc
    result = None
    link_up = False
    deadline = started + cfg.timeout_s
    try:
        while result is None:
            stop = cancelled() if cancelled else None
            if stop is not None:
                raise stop
            if time.monotonic() > deadline:
                if not link_up:
                    raise PeerError(
                        f"could not open the libpsi link to the partner at {parties[1 - spec['rank']][1]} within "
                        f"timeout_s={cfg.timeout_s:g}s (partner not there, or its certificate is not the pinned one)"
                    )
                raise PeerError(f"libpsi did not finish within timeout_s={cfg.timeout_s:g}s")
            try:
                kind, value = q.get(timeout=0.5)
            except queue.Empty:
                if not proc.is_alive():
                    raise PeerError(
                        f"the libpsi engine stopped (exit code {proc.exitcode}); the partner may have disconnected"
                    ) from None
                continue
            if kind == "log":
                link_up = link_up or str(value).startswith("libpsi: link")
                if link_up and port_hold is not None:
                    port_hold.release()  # brpc listens on it now
                reporter.log(str(value))
            elif kind == "progress":
                reporter.progress(0.9 * float(value) / 100.0, "psi")
            elif kind == "error":
                raise PeerError(f"libpsi failed: {value}")
            else:
                result = value
    finally:
        if port_hold is not None:
            port_hold.release()
        # The result (and libpsi's output file) is in: do not wait on brpc's link teardown.
        proc.join(0.5 if result is not None else 5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    mine, peer = result["mine"], result["peer"]
    if mine["n"] == 0:
        raise DataError(f"data.path: {table.path.name} has no rows")
    if mine["unique"] != mine["n"]:
        raise DataError(
            f"data.id_column: {table.path.name} has {mine['n'] - mine['unique']} duplicate ids; ids must be unique"
        )
    if peer["n"] == 0 or peer["unique"] != peer["n"]:
        raise PeerError("the partner's input is empty or has duplicate ids")
    if mine["inter"] != peer["inter"]:
        raise PeerError(
            f"the two sides computed different intersections ({mine['inter']} here, {peer['inter']} at the partner)"
        )
    _finalise(table, raw_out, output.aligned)
    stats = {
        "engine": "libpsi",
        "protocol": protocol,
        "suite": f"libpsi-{protocol}",
        "input_size": int(mine["n"]),
        "peer_input_size": int(peer["n"]),
        "intersection_size": int(mine["inter"]),
        "seconds": round(time.monotonic() - started, 3),
        "resumed": False,
        "role": cfg.role,
    }
    output.write_stats(stats)
    output.ckpt.remove()
    reporter.progress(1.0, "psi")
    return stats


def _job_input(data: Path, work: Path) -> Path:
    """The input as libpsi should open it: a link inside the job's own folder.

    libpsi writes its temporary files beside its input (``<input>.temp.csv``): given
    the registered file itself, that is inside a data root, where two jobs on the
    same dataset would overwrite each other's (and a read-only data root fails).
    Through a link in the job folder, they land in the job folder.
    """
    link = work / f"input{data.suffix or '.csv'}"
    link.unlink(missing_ok=True)
    for stale in work.glob(f"{link.name}.*"):
        stale.unlink(missing_ok=True)  # an interrupted run's temporary files
    try:
        link.symlink_to(data.resolve())
    except OSError:
        shutil.copyfile(data, link)  # no symlinks on this filesystem: a private copy
    return link


def _finalise(table: Any, raw: Path, dest: Path) -> None:
    """libpsi's output (own columns, file order, sorted by id) -> aligned.csv with the id first, atomically."""
    k = table.id_index
    if k == 0:
        # Already our layout (libpsi quotes the header, which any CSV reader unquotes): just publish it.
        with raw.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(raw, dest)
        return
    with raw.open(newline="", encoding="utf-8") as src, atomic_file(dest, "w") as dst:
        reader = csv.reader(src)
        w = csv.writer(dst, lineterminator="\n")
        header = next(reader, None) or table.columns
        order = [k] + [i for i in range(len(header)) if i != k]
        w.writerow([header[i] for i in order])
        for row in reader:
            w.writerow([row[i] for i in order])
