"""Partitioned PSI: P ordinary PSI pairs, partition i of the leader with partition i of the follower.

A ticket's ``psi.partitions`` (P) splits both sides' ids by a keyed hash into P
shares. Each partition worker (a process locally, a pod of an Indexed Job on
Kubernetes) reads the whole input and keeps only its own share; no shared split
pass, no shared input volume. Then:

1. Handshake (mutual TLS, on the partition's runtime address, before the PSI):
   the follower's worker i asks the leader's worker i for the partition key
   (``Key``); both split; then both offer the digest of a partition result an
   earlier attempt already completed (``Reuse``), and the pair reuses it only if
   both sides hold one with the same intersection digest.
2. Otherwise an ordinary PSI of the two shares (the engines' public entry point,
   ``run_builtin``, which also picks libpsi where both sides can run it).
3. The share's result is marked done by ``parts/<i>/done.json`` (digests of the
   input share, of the aligned rows and of the ordered intersection ids).
4. The worker that finds all P parts done merges them into ``psi/aligned.csv``:
   each part is ordered by id (UTF-8 byte order), so a P-way merge by id gives
   exactly the file a single PSI (P = 1) writes, on both sides.

The key: ``BLAKE2b-64(key, id) mod P``. The leader's launcher derives the key
from its installation's secret and the ticket (stable across a ticket's
attempts, so a retry can reuse completed partitions) and hands it to its own
workers in their config; each follower worker receives it from its leader
partner over the mutual-TLS link. Nobody else can tell which partition an id
falls into, and it differs per ticket; the partner learns the size of each of
this side's shares (as an unpartitioned PSI reveals the input size).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import heapq
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc

from fedsite_proto.runtime.v1 import psi_partition_pb2 as pb
from fedsite_proto.runtime.v1 import psi_partition_pb2_grpc as pb_grpc
from runtime.config import DataConfig, JobConfig
from runtime.errors import ConfigError, DataError, PeerError, RuntimeJobError
from runtime.psi.common import PsiParams, parse_params
from runtime.psi.data import Table, atomic_file, atomic_write_json
from runtime.report import RESULT_FILE, Reporter
from runtime.tls import CHANNEL_OPTIONS, NO_PORT_SHARING, add_port, open_channel

MAX_PARTITIONS = 256
HANDSHAKE_VERSION = 1  # psi_partition.proto's PartitionHello.protocol_version
MANIFEST = "done.json"
MANIFEST_VERSION = 1
PERSON = b"fedsite-psi-part"  # BLAKE2b personalisation of the partition hash
# Keys of ``cfg.psi`` that belong to this module, not to the engines.
OWN_KEYS = ("partitions", "partition")


@dataclasses.dataclass(frozen=True)
class PartitionPlan:
    index: int
    count: int
    key: bytes | None  # the leader's (from its config); the follower learns it in the handshake
    reuse_from: tuple[str, ...]
    ports: str  # "offset": partition i on port + i (local); "same": one port, "{partition}" in the host (pods)


def parse_psi(raw: dict[str, Any]) -> tuple[int, PsiParams]:
    """The whole ``psi`` block a ticket sets: the partition count, and the engines' parameters."""
    count = _count(raw)
    return count, parse_params({k: v for k, v in raw.items() if k not in OWN_KEYS})


def partitions_of(cfg: JobConfig) -> int:
    return _count(cfg.psi)


def _count(psi: dict[str, Any]) -> int:
    p = psi.get("partitions", 1)
    if p is None:
        return 1
    if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= MAX_PARTITIONS:
        raise ConfigError(f"psi.partitions: must be an integer in [1, {MAX_PARTITIONS}], got {p!r}")
    return p


def engine_config(cfg: JobConfig) -> JobConfig:
    """The config without this module's keys (what the engines validate)."""
    if not any(k in cfg.psi for k in OWN_KEYS):
        return cfg
    return dataclasses.replace(cfg, psi={k: v for k, v in cfg.psi.items() if k not in OWN_KEYS})


def plan_of(cfg: JobConfig) -> PartitionPlan:
    count = partitions_of(cfg)
    raw = cfg.psi.get("partition") or {}
    if not isinstance(raw, dict):
        raise ConfigError("psi.partition: must be an object")
    index = raw.get("index")
    if index is None:
        # An Indexed Job's pod: Kubernetes sets the index.
        env = os.environ.get("JOB_COMPLETION_INDEX", "")
        if not env.isdigit():
            raise ConfigError("psi.partition.index: required (or JOB_COMPLETION_INDEX in the environment)")
        index = int(env)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise ConfigError(f"psi.partition.index: must be an integer in [0, {count - 1}], got {index!r}")
    key: bytes | None = None
    if cfg.is_leader:
        try:
            key = bytes.fromhex(str(raw.get("key") or ""))
        except ValueError:
            key = b""
        if len(key) < 16:
            raise ConfigError("psi.partition.key: the leader needs a key of at least 16 bytes (hex)")
    reuse = raw.get("reuse_from") or []
    if not isinstance(reuse, list) or not all(isinstance(d, str) for d in reuse):
        raise ConfigError("psi.partition.reuse_from: must be a list of folders")
    ports = raw.get("ports", "offset")
    if ports not in ("offset", "same"):
        raise ConfigError(f"psi.partition.ports: 'offset' or 'same', got {ports!r}")
    return PartitionPlan(index, count, key, tuple(reuse), ports)


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"fedsite-psi-partition-key-id\x00" + key).hexdigest()[:16]


def partition_of(key: bytes, ident: str, count: int) -> int:
    """The partition of one id: a keyed BLAKE2b (a PRF) of its UTF-8 bytes, mod P."""
    h = hashlib.blake2b(ident.encode("utf-8"), key=key[:64], digest_size=8, person=PERSON)
    return int.from_bytes(h.digest(), "big") % count


def _address(address: str, plan: PartitionPlan, *, listen: bool) -> str:
    """Partition i's address: ``{partition}`` replaced by i, else port + i.

    Listening, this side's own convention decides (``ports: same``: every pod on the one port).
    Dialling, the leader's address decides: a name with ``{partition}`` (pods), else port + i.
    """
    if "{partition}" in address:
        return address.replace("{partition}", str(plan.index))
    if plan.ports == "offset" or not listen:
        host, _, port = address.rpartition(":")
        if not port.isdigit() or int(port) + plan.index > 65535:
            raise ConfigError(f"address {address!r}: no port for partition {plan.index}")
        return f"{host}:{int(port) + plan.index}"
    return address


# -- the handshake -------------------------------------------------------------------


class _Handshake(pb_grpc.PsiPartitionServicer):
    """The leader's side: hands out the key, then answers whether the pair reuses an earlier result."""

    def __init__(self, cfg: JobConfig, plan: PartitionPlan) -> None:
        self.cfg, self.plan = cfg, plan
        self.own_offer: str | None = None  # digest of a reusable earlier result ("" = none)
        self.offer_ready = threading.Event()
        self.decided = threading.Event()
        self.reuse = False
        self.error: str = ""  # why the pair cannot go on (the follower's word)
        self.local_error: str = ""  # the leader's own failure, told to the follower

    def _check(self, hello: pb.PartitionHello) -> str:
        if hello.protocol_version != HANDSHAKE_VERSION:
            return (
                f"partition handshake version mismatch: leader speaks {HANDSHAKE_VERSION}, "
                f"follower {hello.protocol_version}"
            )
        if hello.job_id != self.cfg.job_id:
            return f"job mismatch: leader runs {self.cfg.job_id}, follower {hello.job_id}"
        if hello.partitions != self.plan.count or hello.partition != self.plan.index:
            return (
                f"partition mismatch: leader runs partition {self.plan.index} of {self.plan.count}, "
                f"follower {hello.partition} of {hello.partitions}"
            )
        return ""

    def Key(self, request: pb.PartitionHello, context: Any) -> pb.PartitionKeyReply:  # noqa: N802 - gRPC method
        error = self._check(request)
        if error:
            self.error = error
            self.decided.set()
            return pb.PartitionKeyReply(ok=False, error=error)
        assert self.plan.key is not None
        return pb.PartitionKeyReply(ok=True, key=self.plan.key)

    def Reuse(self, request: pb.PartitionReuseRequest, context: Any) -> pb.PartitionReuseReply:  # noqa: N802
        error = self._check(request.hello)
        if error:
            self.error = error
            self.decided.set()
            return pb.PartitionReuseReply(ok=False, error=error)
        if request.error:
            self.error = f"the follower's partition failed: {request.error}"
            self.decided.set()
            return pb.PartitionReuseReply(ok=True, reuse=False)
        self.offer_ready.wait(max(0.1, self.cfg.timeout_s))
        if self.local_error:
            self.decided.set()
            return pb.PartitionReuseReply(ok=False, error=f"the leader's partition failed: {self.local_error}")
        self.reuse = bool(self.own_offer) and self.own_offer == request.offer
        self.decided.set()
        return pb.PartitionReuseReply(ok=True, reuse=self.reuse)

    def Ping(self, request: pb.PartitionHello, context: Any) -> pb.PartitionPingReply:  # noqa: N802
        return pb.PartitionPingReply(ok=True)


# -- splitting, manifests, merging -----------------------------------------------------


def _plain_after_header(path: Path) -> bool:
    """No quote and no CR after the first line: every line is one record, fields split on commas."""
    import mmap

    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return True
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            start = m.find(b"\n") + 1
            if start == 0:
                return True
            return m.find(b'"', start) < 0 and m.find(b"\r", start) < 0


def _split(table: Table, key: bytes, plan: PartitionPlan, out: Path, sentinel: str) -> tuple[int, str]:
    """Write this side's share (its rows whose id falls into the partition); returns (rows, sha256 of the share).

    An empty share gets one placeholder id that cannot match anything (random, with the role in
    it), so the pair still runs and the partner is not left waiting.
    """
    k = table.id_index
    n = 0
    keyed = hashlib.blake2b(key=key[:64], digest_size=8, person=PERSON)
    count, index = plan.count, plan.index
    with atomic_file(out, "w") as f:
        if not table.is_parquet and _plain_after_header(table.path):
            n = _split_plain(table, keyed, count, index, f)
        else:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(table.columns)
            row_no = 0
            for rows in table.iter_rows(65536):
                for r in rows:
                    row_no += 1
                    ident = r[k]
                    if ident == "":
                        raise DataError(f"data.path: {table.path.name} row {row_no} (line {row_no + 1}): empty id")
                    h = keyed.copy()
                    h.update(ident.encode("utf-8"))
                    if int.from_bytes(h.digest(), "big") % count == index:
                        w.writerow(r)
                        n += 1
        if n == 0:
            csv.writer(f, lineterminator="\n").writerow([sentinel if i == k else "" for i in range(len(table.columns))])
    return n, _file_sha256(out)


def _split_plain(table: Table, keyed: Any, count: int, index: int, out: Any) -> int:
    """The fast path for CSV without quotes or CRs: lines are copied as they are."""
    k = table.id_index
    name = table.path.name
    n = 0
    line_no = 1
    try:
        with table.path.open(encoding="utf-8", newline="") as f:
            header = f.readline()
            out.write(header if header.endswith("\n") else header + "\n")
            for line in f:
                line_no += 1
                text = line[:-1] if line.endswith("\n") else line
                if not text:
                    continue
                fields = text.split(",", k + 1)
                if len(fields) <= k:
                    raise DataError(
                        f"data.path: {name} line {line_no}: expected {len(table.columns)} fields, "
                        f"got {text.count(',') + 1}"
                    )
                ident = fields[k]
                if ident == "":
                    raise DataError(f"data.path: {name} row {line_no - 1} (line {line_no}): empty id")
                h = keyed.copy()
                h.update(ident.encode("utf-8"))
                if int.from_bytes(h.digest(), "big") % count == index:
                    out.write(text + "\n")
                    n += 1
    except UnicodeDecodeError as exc:
        raise DataError(f"data.path: {name} near line {line_no + 1} is not valid UTF-8 ({exc.reason})") from None
    return n


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _ids_digest(aligned: Path) -> tuple[int, str]:
    """Count and SHA-256 of the ordered intersection ids (the same on both sides)."""
    h = hashlib.sha256()
    n = 0
    with aligned.open(newline="", encoding="utf-8") as f:
        records = _records(f, _plain_after_header(aligned))
        next(records, None)
        for ident, _, _ in records:
            h.update(ident + b"\n")
            n += 1
    return n, h.hexdigest()


def _valid_manifest(part_dir: Path, plan: PartitionPlan, kid: str, input_sha: str) -> dict[str, Any] | None:
    try:
        m = json.loads((part_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    aligned = part_dir / "psi" / "aligned.csv"
    ok = (
        m.get("version") == MANIFEST_VERSION
        and m.get("partition") == plan.index
        and m.get("partitions") == plan.count
        and m.get("key_id") == kid
        and (not input_sha or m.get("input_sha256") == input_sha)
        and aligned.is_file()
        and _file_sha256(aligned) == m.get("aligned_sha256")
    )
    return m if ok else None


def _records(f: Any, plain: bool) -> Iterator[tuple[bytes, list[str], str]]:
    """(id as UTF-8 bytes, the parsed record, its raw text) of an aligned CSV, the header first.

    `plain` (no quotes or CRs after the header): one record per line, the id up to the first comma.
    Otherwise the csv module parses, and a record spanning lines stays whole.
    """
    header_line = f.readline()
    yield b"", next(csv.reader([header_line]), []), header_line
    if plain:
        for line in f:
            i = line.find(",")
            yield (line[:i] if i >= 0 else line.rstrip("\n")).encode("utf-8"), [], line
        return
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in f:
            consumed.append(line)
            yield line

    for row in csv.reader(lines()):
        raw = "".join(consumed)
        consumed.clear()
        yield (row[0] if row else "").encode("utf-8"), row, raw


def part_dir(output_dir: str | Path, index: int) -> Path:
    return Path(output_dir) / "psi" / "parts" / f"{index:03d}"


def _merge(root: Path, plan: PartitionPlan, kid: str) -> dict[str, Any] | None:
    """All parts done: merge them into psi/aligned.csv (once; under a lock). None while parts are missing."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with (root / ".merge.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifests = []
        for i in range(plan.count):
            d = part_dir(root.parent, i)
            m = _valid_manifest(d, dataclasses.replace(plan, index=i), kid, "")
            if m is None:
                return None
            manifests.append(m)
        digest = hashlib.sha256("".join(m["aligned_sha256"] for m in manifests).encode()).hexdigest()
        stats_path = root / "stats.json"
        try:
            done = json.loads(stats_path.read_text())
            if done.get("parts_sha256") == digest and (root / "aligned.csv").is_file():
                return cast(dict[str, Any], done)
        except (OSError, ValueError):
            pass
        paths = [part_dir(root.parent, i) / "psi" / "aligned.csv" for i in range(plan.count)]
        files = [p.open(newline="", encoding="utf-8") for p in paths]
        try:
            parts = [_records(f, _plain_after_header(p)) for f, p in zip(files, paths, strict=True)]
            headers = [next(p, None) for p in parts]
            first_header = headers[0]
            if first_header is None or any(h is None or h[1] != first_header[1] for h in headers):
                raise DataError("partitions' outputs have different columns (the input changed between partitions?)")
            # Records are copied as the engine wrote them, so the file is byte for byte what P = 1 writes.
            with atomic_file(root / "aligned.csv", "w") as out:
                out.write(first_header[2])
                for _, _, raw in heapq.merge(*parts, key=lambda r: r[0]):
                    out.write(raw)
        finally:
            for f in files:
                f.close()
        first = manifests[0]["stats"]
        stats = {
            "engine": first.get("engine"),
            "protocol": first.get("protocol"),
            "suite": first.get("suite"),
            "role": first.get("role"),
            "partitions": plan.count,
            "input_size": sum(int(m["input_size"]) for m in manifests),
            "peer_input_size": sum(int(m["stats"].get("peer_input_size", 0)) for m in manifests),
            "intersection_size": sum(int(m["intersection_size"]) for m in manifests),
            "seconds": round(max(float(m["stats"].get("seconds", 0.0)) for m in manifests), 3),
            "reused_partitions": sorted(m["partition"] for m in manifests if m.get("reused")),
            "parts_sha256": digest,
        }
        atomic_write_json(stats_path, stats)
        return stats


class _PartReporter:
    """The runtime's reporter with this partition's stage name and log prefix."""

    def __init__(self, parent: Reporter, plan: PartitionPlan) -> None:
        self._parent = parent
        self.stage = f"psi.p{plan.index}of{plan.count}"
        self.prefix = f"[partition {plan.index} of {plan.count}] "

    def progress(self, value: float, stage: str) -> None:
        self._parent.progress(value, self.stage)

    def log(self, line: str, level: str = "info") -> None:
        self._parent.log(self.prefix + line, level)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parent, name)


def _engine(cfg: JobConfig, reporter: Reporter) -> dict[str, Any]:
    """One ordinary PSI (the engines' public entry point; tests count its calls)."""
    from runtime.psi.builtin import run_builtin

    return run_builtin(cfg, parse_params(cfg.psi), reporter)


def result_dir(cfg: JobConfig) -> str:
    """Where a partition worker's reporter keeps its result file (not the side's shared result.json)."""
    if partitions_of(cfg) <= 1:
        return cfg.output_dir
    try:
        return str(part_dir(cfg.output_dir, plan_of(cfg).index))
    except ConfigError:
        return cfg.output_dir


def run(cfg: JobConfig, reporter: Reporter) -> dict[str, Any]:
    plan = plan_of(cfg)
    try:
        return _run(cfg, plan, reporter)
    except RuntimeJobError as exc:
        raise type(exc)(f"partition {plan.index} of {plan.count}: {exc}") from exc


def _run(cfg: JobConfig, plan: PartitionPlan, reporter: Reporter) -> dict[str, Any]:
    started = time.monotonic()
    base = engine_config(cfg)
    parse_params(base.psi)  # a bad engine parameter fails before anything starts
    mine = part_dir(cfg.output_dir, plan.index)
    root = Path(cfg.output_dir) / "psi"
    mine.mkdir(parents=True, exist_ok=True)
    (mine / MANIFEST).unlink(missing_ok=True)
    # The merged result of an earlier run is not this one's.
    (root / "stats.json").unlink(missing_ok=True)
    (root / "aligned.csv").unlink(missing_ok=True)
    preporter = cast(Reporter, _PartReporter(reporter, plan))
    if cfg.is_leader:
        listen = _address(cfg.listen_address or "", plan, listen=True)
        sub = dataclasses.replace(base, listen_address=listen)
    else:
        peer = _address(cfg.peer_address or "", plan, listen=False)
        sub = dataclasses.replace(base, peer_address=peer)
    deadline = started + cfg.timeout_s

    table_error: DataError | None = None
    try:
        table = Table(cfg.data.path, cfg.data.id_column)
    except DataError as exc:
        table_error, table = exc, None

    share = mine / "input.csv"
    sentinel = f"fedsite-empty-partition-{cfg.role}-{secrets.token_hex(16)}"

    def split(key: bytes) -> tuple[int, str, str]:
        """(rows, input digest, offer: the digest of a reusable earlier result or '')."""
        if table is None:
            assert table_error is not None
            raise table_error
        n, input_sha = _split(table, key, plan, share, sentinel)
        kid = key_id(key)
        for prev in plan.reuse_from:
            m = _valid_manifest(part_dir(prev, plan.index), plan, kid, input_sha)
            if m is not None and Path(prev).resolve() != Path(cfg.output_dir).resolve():
                return n, input_sha, f"{m['ids_sha256']}:{prev}"
        return n, input_sha, ""

    reuse_dir = ""
    if cfg.is_leader:
        assert plan.key is not None
        key = plan.key
        hs = _Handshake(sub, plan)
        server = grpc.server(
            cf.ThreadPoolExecutor(max_workers=4, thread_name_prefix="psi-part"),
            options=[*CHANNEL_OPTIONS, NO_PORT_SHARING],
        )
        pb_grpc.add_PsiPartitionServicer_to_server(hs, server)
        try:
            port = add_port(server, sub)
        except RuntimeError as exc:
            raise PeerError(f"listen_address: cannot listen on {listen} ({exc})") from None
        if port == 0:
            raise PeerError(f"listen_address: cannot listen on {listen}")
        server.start()
        try:
            try:
                n, input_sha, offer = split(key)
            except DataError as exc:
                hs.local_error = str(exc)
                hs.offer_ready.set()
                hs.decided.wait(min(30.0, max(0.1, deadline - time.monotonic())))  # tell the follower why
                time.sleep(0.2)
                raise
            hs.own_offer = offer.partition(":")[0]
            hs.offer_ready.set()
            if not hs.decided.wait(max(0.1, deadline - time.monotonic())):
                raise PeerError(
                    f"the follower's partition {plan.index} did not connect within timeout_s={cfg.timeout_s:g}s"
                )
            if hs.error:
                raise PeerError(hs.error)
            reuse_dir = offer.partition(":")[2] if hs.reuse else ""
        finally:
            server.stop(grace=0.5).wait()
    else:
        channel = open_channel(sub)
        stub = pb_grpc.PsiPartitionStub(channel)
        try:
            hello = pb.PartitionHello(
                protocol_version=HANDSHAKE_VERSION, job_id=cfg.job_id, partition=plan.index, partitions=plan.count
            )
            try:
                reply = stub.Key(hello, timeout=max(0.1, deadline - time.monotonic()), wait_for_ready=True)
            except grpc.RpcError as exc:
                raise PeerError(
                    f"cannot reach the leader's partition {plan.index} at {sub.peer_address}: {exc.details()}"
                ) from None
            if not reply.ok:
                raise PeerError(reply.error)
            key = bytes(reply.key)
            try:
                n, input_sha, offer = split(key)
            except DataError as exc:
                # Tell the leader's worker (so it does not wait for us), then fail with our own reason.
                try:
                    stub.Reuse(pb.PartitionReuseRequest(hello=hello, error=str(exc)), timeout=10.0, wait_for_ready=True)
                except grpc.RpcError:
                    pass
                raise
            answer = stub.Reuse(
                pb.PartitionReuseRequest(hello=hello, offer=offer.partition(":")[0]),
                timeout=max(0.1, deadline - time.monotonic()),
                wait_for_ready=True,
            )
            if not answer.ok:
                raise PeerError(answer.error)
            reuse_dir = offer.partition(":")[2] if answer.reuse else ""
            # The leader's PSI server takes the same port once the handshake server is gone.
            while time.monotonic() < deadline:
                try:
                    stub.Ping(hello, timeout=1.0, wait_for_ready=True)
                except grpc.RpcError:
                    break
                time.sleep(0.05)
        finally:
            channel.close()

    kid = key_id(key)
    if reuse_dir:
        src = part_dir(reuse_dir, plan.index)
        (mine / "psi").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "psi" / "aligned.csv", mine / "psi" / "aligned.csv")
        manifest = json.loads((src / MANIFEST).read_text())
        manifest["reused"] = True
        manifest["reused_from"] = str(src)
        share.unlink(missing_ok=True)
        atomic_write_json(mine / MANIFEST, manifest)
        preporter.log(f"psi: reused the result of an earlier attempt ({manifest['intersection_size']} common ids)")
        preporter.progress(1.0, "psi")
    else:
        sub = dataclasses.replace(
            sub,
            job_id=f"{cfg.job_id}.p{plan.index}of{plan.count}",
            data=DataConfig(path=str(share), id_column=cfg.data.id_column, label_column=cfg.data.label_column),
            output_dir=str(mine),
        )
        stats = _engine(sub, preporter)
        share.unlink(missing_ok=True)
        if n == 0:
            stats["input_size"] = 0  # the placeholder id is not an input row
        aligned = mine / "psi" / "aligned.csv"
        common, ids_sha = _ids_digest(aligned)
        manifest = {
            "version": MANIFEST_VERSION,
            "partition": plan.index,
            "partitions": plan.count,
            "key_id": kid,
            "input_sha256": input_sha,
            "input_size": n,
            "intersection_size": common,
            "ids_sha256": ids_sha,
            "aligned_sha256": _file_sha256(aligned),
            "stats": stats,
        }
        atomic_write_json(mine / MANIFEST, manifest)
        preporter.progress(1.0, "psi")
    merged = _merge(root, plan, kid)
    part_result = {
        "partition": plan.index,
        "partitions": plan.count,
        "input_size": manifest["input_size"],
        "intersection_size": manifest["intersection_size"],
        "reused": bool(manifest.get("reused")),
        "seconds": round(time.monotonic() - started, 3),
    }
    if merged is None:
        return part_result
    atomic_write_json(Path(cfg.output_dir) / RESULT_FILE, {"psi": merged})
    return {**merged, "merged_by": plan.index}
