"""The libpsi engine: SecretFlow's libpsi (``spu.psi``) for RR22, KKRT and ECDH.

The two runtimes agree on engine and protocol over the built-in engine's gRPC
``Hello`` (mTLS); then each runs ``psi_execute`` over a ``spu.libspu.link``
brpc link with TLS from the same certificates (each side presents its own
certificate and verifies the partner's against the pinned CA). libpsi runs in a
child process: a cancel (kill) stops it at once, and brpc's occasional abort
while tearing the link down cannot take the runtime with it once the result is
in. The child is started first thing in the PSI step, so libpsi loads while the
rest of the runtime imports and the two sides shake hands.

libpsi's own file pipeline (an external ``sort`` of whole rows, its duplicate
handling, re-reading the whole input for the output) is kept out of the way:
meanwhile the runtime reads the id column with Arrow and checks it (empty and
duplicate ids), and hands libpsi only the ids and their row numbers, with
``keys_unique``, no alignment, and the key count and hash libpsi would otherwise
re-read the whole file to compute (its ``.meta`` file, see ``write_meta``). libpsi's output then carries each common id's
row number, so the runtime picks its rows by position (no hash lookup), orders
them with a vectorised sort and writes them with Arrow (own columns, id first,
rows by id). libpsi's scratch files go to the job's own folder (``TMPDIR``),
removed with it, never to the machine's ``/tmp``.

Link addresses: each side's link listens on a free port it announces in
``Hello`` (the leader's can be fixed with ``psi.link_port``, e.g. for a
Kubernetes Service). Both must be reachable from the partner.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import multiprocessing
import os
import queue
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.config import PARQUET_SUFFIXES, JobConfig
from runtime.errors import DataError, PeerError
from runtime.lifeline import die_with_parent
from runtime.report import Reporter

PROTOCOLS = ("rr22", "kkrt", "ecdh")
_ENUM = {"rr22": "PROTOCOL_RR22", "kkrt": "PROTOCOL_KKRT", "ecdh": "PROTOCOL_ECDH"}


@functools.lru_cache(maxsize=1)
def available() -> str | None:
    """None when libpsi looks installed here, else why not (named in the fallback message).

    Cheap: whether ``spu`` and its libpsi extension are there, without importing them
    (that costs a second of CPU). The libpsi worker imports them for real and says
    whether that worked (``Worker.wait_loaded``) before a side offers libpsi to its partner.
    """
    if os.environ.get("FEDSITE_PSI_NO_LIBPSI"):
        return "disabled by FEDSITE_PSI_NO_LIBPSI"
    try:
        spec = importlib.util.find_spec("spu")
    except (ImportError, ValueError) as exc:
        return f"spu (libpsi) cannot be imported: {exc.__class__.__name__}: {exc}"
    if spec is None or not spec.submodule_search_locations:
        return "spu (libpsi) is not installed"
    if not any(any(Path(d).glob("libpsi*.so")) for d in spec.submodule_search_locations):
        return "spu (libpsi) is installed without its libpsi extension"
    return None


def prestart(cfg: JobConfig) -> Worker | None:
    """Start the libpsi worker first thing if this job will most likely run libpsi, else None.

    Loading libpsi and reading the ids then overlap the rest of the runtime's imports and the
    handshake. Decided from the raw config, before the modules that parse it are imported; the
    engine decides for real later and closes a worker it does not use.
    """
    psi = cfg.psi
    protocol, engine = psi.get("protocol", "ecdh"), psi.get("engine", "auto")
    # Whether common.preference() puts libpsi first, from the raw values (importing common
    # would import numpy and Arrow, the very wait this start avoids).
    first_is_libpsi = (protocol in ("auto", "rr22", "kkrt") and engine in ("auto", "libpsi")) or (
        protocol == "ecdh" and engine == "libpsi"
    )
    if not first_is_libpsi or psi.get("partitions") not in (None, 1) or available() is not None:
        return None
    data = Path(cfg.data.path)
    if data.suffix.lower() in PARQUET_SUFFIXES or not data.is_file():
        return None
    return Worker(cfg)


def ids_folder(cfg: JobConfig) -> Path:
    """Where the worker writes this side's ids for libpsi (libpsi's temporary files go beside them)."""
    return Path(cfg.output_dir) / "psi" / ".libpsi"


def ids_file(cfg: JobConfig) -> str:
    """This side's ids file for libpsi (with libpsi's ``.meta`` beside it)."""
    return str(ids_folder(cfg) / "ids.csv")


class Worker:
    """A spawned process that loads libpsi at once and then runs one ``psi_execute``.

    With ``cfg``, this process also starts reading and checking this side's ids at once (a
    thread), while libpsi loads and the two runtimes shake hands; they go to
    ``ids_folder(cfg)`` (removed by ``close``) and reach the worker once its link is up.
    """

    def __init__(self, cfg: JobConfig | None = None) -> None:
        self.folder: Path | None = None
        self.prepared: dict[str, Any] = {}
        self._prep: threading.Thread | None = None
        if cfg is not None:
            self.folder = ids_folder(cfg)
            shutil.rmtree(self.folder, ignore_errors=True)  # an interrupted run's files
            self.folder.mkdir(parents=True, exist_ok=True)
        ctx = multiprocessing.get_context("spawn")
        self.specs: multiprocessing.Queue = ctx.Queue()
        self.events: multiprocessing.Queue = ctx.Queue()
        scratch = str(self.folder) if self.folder is not None else None
        # libpsi logs its phases to the worker's stdout: read here, passed on to this process's stdout
        # (where they went before) and turned into progress (libpsi's progress hook stays silent).
        log_r, log_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_worker_main,
            args=(self.specs, self.events, os.getpid(), scratch, log_w),
            name="libpsi",
            daemon=True,
        )
        self.proc.start()
        log_w.close()
        threading.Thread(target=_pump_log, args=(log_r, self.events), name="libpsi-log", daemon=True).start()
        if cfg is not None:
            self._prepare(
                {
                    "data": str(Path(cfg.data.path).resolve()),
                    "id_column": cfg.data.id_column,
                    "input": ids_file(cfg),
                }
            )
        self.used = False
        self.loaded: str | None = None  # "" once libpsi imported, else why it did not
        self.early: list[tuple[str, Any]] = []  # events read while waiting for the load

    def _prepare(self, prep: dict[str, Any]) -> None:
        self._prep = threading.Thread(
            target=lambda: self.prepared.update(_prepare_ids(prep)), name="psi-ids", daemon=True
        )
        self._prep.start()

    def wait_loaded(self, timeout_s: float) -> str | None:
        """None once libpsi is loaded in the worker, else why not (an import error or no answer)."""
        end = time.monotonic() + timeout_s
        while self.loaded is None:
            try:
                kind, value = self.events.get(timeout=max(0.05, min(0.5, end - time.monotonic())))
            except queue.Empty:
                if not self.proc.is_alive():
                    self.loaded = f"the libpsi worker stopped (exit code {self.proc.exitcode})"
                elif time.monotonic() > end:
                    return f"libpsi did not load within {timeout_s:g}s"
                continue
            if kind == "loaded":
                self.loaded = ""
            elif kind == "load_error":
                self.loaded = str(value)
            self.early.append((kind, value))
        return self.loaded or None

    def start(self, spec: dict[str, Any]) -> None:
        """Run `spec`; this side's checked ids follow as soon as they are ready."""
        self.used = True
        self.specs.put(spec)
        if self._prep is None:
            self._prepare({k: spec[k] for k in ("data", "id_column", "input")})
        prep = self._prep

        def feed() -> None:
            assert prep is not None
            prep.join()
            self.specs.put(dict(self.prepared))

        threading.Thread(target=feed, name="psi-ids-feed", daemon=True).start()

    def close(self, wait_s: float = 0.5) -> None:
        if self.proc.is_alive() and not self.used:
            self.specs.put(None)
        self.proc.join(wait_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        if self._prep is not None:
            self._prep.join(30)  # not in the middle of writing the ids file when the folder goes
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _worker_main(
    specs: multiprocessing.Queue,
    out: multiprocessing.Queue,
    parent: int,
    scratch: str | None = None,
    log: Any = None,
) -> None:
    # Killed with the runtime (a cancel kills it). The worker is started from the runtime's
    # main thread, so the kernel's parent-death signal is safe to use here.
    die_with_parent(parent, pdeathsig=True)
    if log is not None:
        sys.stdout.flush()
        os.dup2(log.fileno(), 1)  # libpsi's log (C++, to file descriptor 1) goes to the runtime's reader
        log.close()
    if scratch is not None:
        # libpsi's scratch folders go to the job's folder, removed with it (its timing trace
        # still goes to /tmp: that path is fixed in libpsi).
        os.environ["TMPDIR"] = scratch
    t0 = time.monotonic()
    try:
        psi, link = import_libpsi()
    except Exception as exc:  # noqa: BLE001 - sent to the parent
        out.put(("load_error", f"spu (libpsi) cannot be imported: {exc.__class__.__name__}: {exc}"))
        return
    out.put(("loaded", None))
    out.put(("log", f"libpsi: loaded in {time.monotonic() - t0:.2f}s"))
    spec = specs.get()
    if spec is None:
        return
    _child(spec, out, specs, psi, link)
    # Done (the link is stopped, the result sent): end here rather than in the interpreter's
    # teardown, where brpc's threads are torn down too (the runtime waits for this exit, so the
    # partner has had this side's last message before the process and its socket go).
    out.close()
    out.join_thread()
    os._exit(0)


# libpsi's log lines that mark where a run is (the same for RR22, KKRT and ECDH, bar the per-bucket line).
_STAGES = (
    ("preprocess", re.compile(r"::PreProcess\] start")),
    ("online", re.compile(r"::Online\] start")),
    # one per bucket: RR22 at the end of each, KKRT at the start of each
    ("bucket", re.compile(r"\] get intersection end|\] run psi bucket_idx=")),
    ("online_done", re.compile(r"::Online\] end")),
    ("sorted", re.compile(r"Finished sort scripts")),
    ("finalized", re.compile(r"AbstractPsiParty::Finalize\] end")),
)
# The step's progress at each stage: the share of a 10M RR22 run spent before it (bucketing 25 %,
# the buckets 45 %, libpsi's output 25 %, the runtime's own output the rest).
STAGE_PROGRESS = {"preprocess": 0.03, "online": 0.25, "online_done": 0.70, "sorted": 0.78, "finalized": 0.95}


def libpsi_stage(line: str) -> str | None:
    """The stage a libpsi log line marks (see _STAGES), else None."""
    for name, pattern in _STAGES:
        if pattern.search(line):
            return name
    return None


def _pump_log(conn: Any, events: multiprocessing.Queue) -> None:
    """Pass the worker's stdout (libpsi's log) on to this process's stdout; stage lines become events."""
    fd, rest = conn.fileno(), b""
    out = getattr(sys.stdout, "buffer", None)
    try:
        while chunk := os.read(fd, 1 << 16):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for raw in lines:
                stage = libpsi_stage(raw.decode("utf-8", "replace"))
                if stage is not None:
                    events.put(("stage", stage))
            if out is not None and lines:
                try:
                    out.write(b"\n".join(lines) + b"\n")
                    out.flush()
                except (OSError, ValueError):
                    out = None  # this process's stdout is gone: keep reading, or libpsi would block on its log
    except OSError:
        pass  # the worker is gone
    finally:
        conn.close()


def import_libpsi() -> tuple[Any, Any]:
    """``spu.psi`` and ``spu.libspu.link``, without running ``spu``'s package init.

    That init imports JAX for SPU's compiler (0.35 s of CPU), which PSI never uses; libpsi and
    the link are two extension modules of their own (0.03 s). If this lean load fails (another
    spu layout), the package is imported the usual way.
    """
    import types

    if "spu" not in sys.modules:
        spec = importlib.util.find_spec("spu")
        if spec is not None and spec.submodule_search_locations:
            pkg = types.ModuleType("spu")
            pkg.__path__ = list(spec.submodule_search_locations)
            pkg.__spec__ = spec
            pkg.__file__ = spec.origin
            sys.modules["spu"] = pkg
            try:
                from spu import psi
                from spu.libspu import link

                return psi, link
            except Exception:  # noqa: BLE001 - fall back to the full import below
                for name in [m for m in sys.modules if m == "spu" or m.startswith("spu.")]:
                    del sys.modules[name]
    from spu import psi
    from spu.libspu import link

    return psi, link


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


IDS_HEADER = "psi_id"
ROW_HEADER = "psi_row"  # each id's row number in the data file: libpsi's output carries it back


def _prepare_ids(spec: dict[str, Any]) -> dict[str, Any]:
    """This side's ids for libpsi: read with Arrow, checked (empty, duplicate), written with their row numbers."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from runtime.psi.data import Table, find_duplicate

    try:
        table = Table(spec["data"], spec["id_column"])
        ids = table.read_ids()
        if len(ids) == 0:
            raise DataError(f"data.path: {table.path.name} has no rows")
        find_duplicate(ids, table.path.name)
        rows = pa.array(np.arange(len(ids), dtype=np.int64))
        with open(spec["input"], "wb") as f:
            f.write(f"{IDS_HEADER},{ROW_HEADER}\n".encode())
            pcsv.write_csv(
                pa.table({IDS_HEADER: ids, ROW_HEADER: rows}),
                f,
                pcsv.WriteOptions(include_header=False, quoting_style="none"),
            )
        write_meta(spec["input"], ids)
        n = len(ids)
        del ids, rows
        trim()
        return {"n": n, "error": "", "input": spec["input"]}
    except DataError as exc:
        return {"n": 0, "error": str(exc), "input": ""}
    except Exception as exc:  # noqa: BLE001 - e.g. an id Arrow cannot write unquoted: named to both sides
        return {
            "n": 0,
            "error": f"data.path: cannot prepare the ids for libpsi ({exc.__class__.__name__}: {exc})",
            "input": "",
        }


def trim() -> None:
    """Give the memory this process has freed back to the system (glibc keeps it otherwise).

    The ids read, hashed, sorted and written before the protocol are garbage once the ids file is
    written; with the C library's allocator for Arrow too (step.run), this brings the runtime back
    to its table while libpsi runs beside it (0.76 GB -> 0.42 GB for 10M ids of three columns).
    """
    import ctypes
    import ctypes.util

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim this way


def write_meta(path: str, ids: Any) -> None:
    """libpsi's ``<input>.meta`` for an ids file of unique `ids` (in file order), so libpsi trusts it.

    With ``keys_unique``, libpsi reads a new input file once through before anything else, only to
    count its keys and hash them, and keeps the figures in this file beside it (reused while the
    file's size is unchanged): 4.2 s of 43 s for 10M ids. The runtime has the ids in memory and has
    just checked them unique, so it writes the same figures itself: the SHA-256 of the keys' bytes
    one after the other (Arrow's string data, in file order), and the counts.
    ``test_the_meta_file_is_the_one_libpsi_writes`` compares it with libpsi's own.
    """
    import base64
    import hashlib

    from runtime.psi.data import string_buffers

    digest = hashlib.sha256()
    chunks = ids.chunks if hasattr(ids, "chunks") else [ids]
    n = 0
    for chunk in chunks:
        n += len(chunk)
        if len(chunk):
            off, data = string_buffers(chunk)
            digest.update(data[int(off[0]) : int(off[-1])].data)  # the bytes, not a copy
    meta = {
        "keysHash": base64.b64encode(digest.digest()).decode(),
        "uniqueKeyCnt": n,
        "originalCnt": n,
        "sourceFileSize": str(os.path.getsize(path)),
    }
    Path(path + ".meta").write_text(json.dumps(meta, separators=(",", ":")))


def _link_desc(link: Any, spec: dict[str, Any]) -> Any:
    """The brpc link's settings: the parties, TLS, and retries quick enough for a link that is coming up."""
    desc = link.Desc()
    desc.id = spec["job_id"]
    for name, addr in spec["parties"]:
        desc.add_party(name, addr)
    # The partner's link may not listen yet when this side first calls: brpc's default retry of that
    # first call waits a whole second (a link then took 1.1-1.3 s to come up instead of 0.1-0.2 s).
    # Asked again every 20 ms (the partner starts its link at about the same moment), up to timeout_s.
    desc.connect_retry_interval_ms = 20
    desc.connect_retry_times = max(50, int(min(spec["timeout_s"], 600) * 50))
    # Its retries then come every 50, 150, 250 ... ms, ten in all (5 s), not after 1, 3 and 5 s.
    desc.retry_opts.retry_interval_ms = 50
    desc.retry_opts.retry_interval_incr_ms = 100
    desc.retry_opts.max_retry = 10
    desc.recv_timeout_ms = int(spec["timeout_s"] * 1000)
    if spec["tls"]:
        cert, key, ca = spec["tls"]
        desc.enable_ssl = True
        for opts in (desc.server_ssl_opts, desc.client_ssl_opts):
            opts.cert.certificate_path = cert
            opts.cert.private_key_path = key
            opts.verify.ca_file_path = ca
            opts.verify.verify_depth = 1
    return desc


def _child(spec: dict[str, Any], out: multiprocessing.Queue, specs: multiprocessing.Queue, psi: Any, link: Any) -> None:
    """Runs in the worker: the link (while the ids are read), both sides' checks, one psi_execute, the counts."""
    desc = _link_desc(link, spec)
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
        prepared = specs.get()  # this side's ids, read and checked by the runtime meanwhile
        out.put(("log", f"libpsi: {prepared['n']} ids read and checked"))
        # Both sides' input checks before the protocol: bad input fails both, naming the problem.
        mine_check = {"n": prepared["n"], "error": prepared["error"], "bucket_size": spec["bucket_size"]}
        checks = [json.loads(x) for x in ctx.all_gather(json.dumps(mine_check))]
        peer_check = checks[1 - spec["rank"]]
        problem = None
        if prepared["error"]:
            problem = ("data_error", prepared["error"])
        elif peer_check["error"]:
            problem = ("peer_error", f"the partner's input cannot be used: {peer_check['error']}")
        elif peer_check.get("bucket_size") != spec["bucket_size"]:
            problem = (
                "peer_error",
                f"psi.bucket_size differs: {spec['bucket_size']} here, {peer_check.get('bucket_size')} at the partner",
            )
        if problem is not None:
            out.put(problem)
            # Both sides stop here, having seen the same checks. Stopping the link waits until this side's
            # part of the exchange has reached the partner: a worker gone sooner left the partner's
            # all_gather waiting until its timeout, or brpc ending it with exit code 255.
            ctx.stop_link()
            return
        # libpsi splits both sides' ids into buckets of bucket_size by the larger input (ECDH runs as one)
        buckets = -(-max(prepared["n"], peer_check["n"]) // spec["bucket_size"]) if spec["protocol"] != "ecdh" else 1
        out.put(("buckets", max(1, buckets)))
        proto = getattr(psi.PsiProtocol, _ENUM[spec["protocol"]])
        pconf = psi.PsiProtocolConfig(protocol=proto, receiver_rank=0, broadcast_result=True)
        # libpsi hashes both inputs into buckets and runs the protocol bucket by bucket: the bucket
        # size bounds the protocol's memory (psi.bucket_size, docs/psi.md).
        pconf.bucket_size = spec["bucket_size"]
        if spec["protocol"] == "ecdh":
            pconf.ecdh_params = psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519, batch_size=4096)
        conf = psi.PsiExecuteConfig(
            protocol_conf=pconf,
            # Checked above: the ids are unique, so libpsi need not sort the input to find duplicates;
            # the runtime aligns the rows itself, so libpsi need not sort its output either.
            input_params=psi.InputParams(path=prepared["input"], selected_keys=[IDS_HEADER], keys_unique=True),
            output_params=psi.OutputParams(path=spec["output"], disable_alignment=True),
            checkpoint_conf=psi.CheckpointConfig(enable=False),
        )

        def hook(p) -> None:
            out.put(("progress", p.percentage))

        t1 = time.monotonic()
        rep = psi.psi_execute(conf, ctx, psi.ProgressParams(hook=hook, interval_ms=500))
        out.put(
            (
                "log",
                f"libpsi: {spec['protocol']} done in {time.monotonic() - t1:.1f}s (buckets of {pconf.bucket_size:,} ids)",
            )
        )
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
    from runtime.psi.common import Output, parse_params
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
        "data": str(Path(cfg.data.path).resolve()),
        "input": ids_file(cfg),  # libpsi's temporary files go beside it
        "id_column": cfg.data.id_column,
        "output": str(raw_out),
        "tls": tls,
        "timeout_s": cfg.timeout_s,
        "bucket_size": parse_params(cfg.psi).bucket_size,
    }
    worker = worker or Worker(cfg)
    worker.start(spec)
    # This side's whole table, read with Arrow while libpsi runs (it is needed only for the output).
    loaded: dict[str, Any] = {}

    def load() -> None:
        try:
            loaded["table"] = table.read_table()
        except DataError as exc:
            loaded["error"] = exc

    loader = threading.Thread(target=load, name="psi-table", daemon=True)
    loader.start()
    q, proc = worker.events, worker.proc
    result = None
    link_up = False
    done = 0.0  # progress of the step so far (never goes back)
    buckets, bucket = 1, 0

    def advance(value: float) -> None:
        nonlocal done
        if value > done:
            done = value
            reporter.progress(value, "psi")

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
                kind, value = worker.early.pop(0) if worker.early else q.get(timeout=0.5)
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
            elif kind == "stage":
                if value == "bucket":
                    bucket += 1
                    lo, hi = STAGE_PROGRESS["online"], STAGE_PROGRESS["online_done"]
                    advance(lo + (hi - lo) * min(bucket, buckets) / buckets)
                else:
                    advance(STAGE_PROGRESS[str(value)])
            elif kind == "buckets":
                buckets = int(value)
            elif kind == "progress":  # libpsi's own hook, should it ever report
                advance(0.9 * float(value) / 100.0)
            elif kind == "loaded":
                continue
            elif kind in ("error", "load_error"):
                raise PeerError(f"libpsi failed: {value}")
            elif kind == "data_error":
                raise DataError(str(value))
            elif kind == "peer_error":
                raise PeerError(str(value))
            else:
                result = value
        mine, peer = result["mine"], result["peer"]
        if mine["unique"] != mine["n"] or peer["unique"] != peer["n"] or mine["n"] == 0 or peer["n"] == 0:
            raise PeerError(
                f"libpsi counted inputs that were checked unique and non-empty (here {mine}, partner {peer})"
            )
        if mine["inter"] != peer["inter"]:
            raise PeerError(
                f"the two sides computed different intersections ({mine['inter']} here, {peer['inter']} at the partner)"
            )
        loader.join()
        if "error" in loaded:
            raise loaded["error"]
        # Meanwhile the worker tears its link down (it has sent its last message; killing it sooner
        # could leave the partner waiting for that message).
        t_out = time.monotonic()
        _write_output(table, loaded["table"], raw_out, output.aligned, int(mine["inter"]))
        reporter.log(f"psi: aligned output written in {time.monotonic() - t_out:.1f}s")
    finally:
        if port_hold is not None:
            port_hold.release()
        # The result (and libpsi's output file) is in: do not wait long on brpc's link teardown.
        proc.join(0.5 if result is not None else 5)
        worker.close(0)  # kills it if still there; removes this side's ids file and libpsi's scratch
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


def _write_output(table: Any, full: Any, raw: Path, dest: Path, expected: int) -> None:
    """libpsi's intersection (ids and their row numbers) -> this side's rows ordered by id, id first, written atomically."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    from runtime.psi.data import write_rows

    inter = pcsv.read_csv(
        raw,
        convert_options=pcsv.ConvertOptions(
            column_types={IDS_HEADER: pa.string(), ROW_HEADER: pa.int64()},
            include_columns=[IDS_HEADER, ROW_HEADER],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            null_values=[],
        ),
    )
    if inter.num_rows != expected:
        raise PeerError(f"libpsi wrote {inter.num_rows} common ids but counted {expected}")
    changed = DataError(f"data.path: {table.path.name} changed while PSI ran (its rows are not the ones PSI read)")
    pos = inter.column(ROW_HEADER)
    if expected and (pc.min(pos).as_py() < 0 or pc.max(pos).as_py() >= full.num_rows):
        raise changed
    picked = full.take(pos)
    if expected and not pc.all(pc.equal(picked.column(table.id_index), inter.column(IDS_HEADER))).as_py():
        raise changed
    write_rows(table, picked, dest)
