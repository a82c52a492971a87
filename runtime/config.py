"""The runtime's one config file: parsed and validated before any work starts.

A config is JSON. Fields shared by every command::

    {
      "version": 1,
      "job_id": "7b0c…",                       # the job's UUID (same on both sides)
      "role": "leader" | "follower",           # leader holds the labels and listens
      "listen_address": "0.0.0.0:7001",        # leader: where its runtime server binds
      "peer_address": "127.0.0.1:7001",        # follower: the leader runtime's address
      "peer_server_name": "fedsite-runtime",   # name checked in the leader's certificate
      "tls": {"cert_file": …, "key_file": …, "peer_ca_file": …} | null,
      "data": {"path": …, "id_column": "id", "label_column": "label" | null,
               "folders": ["/srv/data/acme", …]},   # optional: the path must really lie in one
      "output_dir": "var/jobs/<uuid>/alpha",
      "steps": ["psi", "train"],               # what `python -m runtime run` does
      "psi": {...}, "train": {...}, "tree": {...}, "score": {...}, "serve": {...},   # per-command parameters
      "stream": {...},                         # stream_join: source and join parameters (runtime/stream/params.py); stream_train: publish_every_*
      "report": {"url": "http://…/api/v1/runtime/jobs/<uuid>/report", "token": "…"} | null,
      "timeout_s": 3600
    }

``tls: null`` (plaintext) is accepted only when ``allow_insecure`` is true, which
only tests set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError

ROLES = ("leader", "follower")
STEPS = ("psi", "train", "tree", "score", "serve", "stream_join", "stream_train")


@dataclass(frozen=True)
class TLSConfig:
    """Paths of this side's certificate and key, and the partner CA it pins."""

    cert_file: str
    key_file: str
    peer_ca_file: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        """Return (cert, key, peer_ca) PEM bytes."""
        out = []
        for name in ("cert_file", "key_file", "peer_ca_file"):
            path = Path(getattr(self, name))
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"tls.{name}: cannot read {path}: {exc.strerror}") from None
        return out[0], out[1], out[2]


PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")  # a data file with another suffix is CSV


@dataclass(frozen=True)
class DataConfig:
    """This side's input table."""

    path: str
    id_column: str
    label_column: str | None = None
    folders: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportConfig:
    """Where progress goes: the installation's report endpoint and the job token."""

    url: str
    token: str
    # After the job's work is done, how long the runtime keeps trying to deliver its last
    # reports before it exits (its result is in <output_dir>/result.json either way).
    final_flush_s: float = 30.0


@dataclass(frozen=True)
class JobConfig:
    """A validated runtime config."""

    job_id: str
    role: str
    data: DataConfig
    output_dir: str
    listen_address: str | None = None
    peer_address: str | None = None
    peer_server_name: str = "fedsite-runtime"
    tls: TLSConfig | None = None
    steps: tuple[str, ...] = ()
    psi: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    tree: dict[str, Any] = field(default_factory=dict)
    score: dict[str, Any] = field(default_factory=dict)
    serve: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    report: ReportConfig | None = None
    timeout_s: float = 3600.0
    allow_insecure: bool = False

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj or obj[key] is None:
        raise ConfigError(f"{where}{key}: required")
    value = obj[key]
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}{key}: must be {name}, got {type(value).__name__}")
    return value


def _optional(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if obj.get(key) is None:
        return default
    return _require(obj, key, kind, where)


def _check_inside(path: str, folders: tuple[str, ...]) -> None:
    """The workspace's data path must really lie in one of its folders (symlinks followed)."""
    try:
        real = Path(path).resolve()
        inside = any(real == f or f in real.parents for f in (Path(folder).resolve() for folder in folders))
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"data.path: cannot resolve {path} ({exc})") from None
    if not inside:
        raise ConfigError(f"data.path: {path} is outside this workspace's data folders ({', '.join(folders)})")


def parse_config(raw: dict[str, Any]) -> JobConfig:
    """Validate a config dict; raise ConfigError naming the first bad field."""
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a JSON object")
    version = raw.get("version", 1)
    if version != 1:
        raise ConfigError(f"version: unsupported config version {version!r} (this runtime reads 1)")
    job_id = _require(raw, "job_id", str, "")
    role = _require(raw, "role", str, "")
    if role not in ROLES:
        raise ConfigError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    d = _require(raw, "data", dict, "")
    stream = _optional(raw, "stream", dict, "", {})
    # A stream job reading a NATS subject has no data path (its events come from the broker).
    path_needed = not (stream and stream.get("source") == "nats")
    folders = _optional(d, "folders", list, "data.", [])
    if not all(isinstance(f, str) and f for f in folders):
        raise ConfigError("data.folders: must be a list of folder paths")
    data = DataConfig(
        path=_require(d, "path", str, "data.") if path_needed else _optional(d, "path", str, "data.", ""),
        id_column=_require(d, "id_column", str, "data."),
        label_column=_optional(d, "label_column", str, "data."),
        folders=tuple(folders),
    )
    if data.folders and data.path:
        _check_inside(data.path, data.folders)
    output_dir = _require(raw, "output_dir", str, "")
    tls_raw = raw.get("tls")
    tls = None
    if tls_raw is not None:
        if not isinstance(tls_raw, dict):
            raise ConfigError("tls: must be an object or null")
        tls = TLSConfig(
            cert_file=_require(tls_raw, "cert_file", str, "tls."),
            key_file=_require(tls_raw, "key_file", str, "tls."),
            peer_ca_file=_require(tls_raw, "peer_ca_file", str, "tls."),
        )
    allow_insecure = bool(raw.get("allow_insecure", False))
    if tls is None and not allow_insecure:
        raise ConfigError("tls: required (plaintext links are only for tests, with allow_insecure)")
    listen_address = _optional(raw, "listen_address", str, "")
    peer_address = _optional(raw, "peer_address", str, "")
    if role == "leader" and not listen_address:
        raise ConfigError("listen_address: required for the leader")
    if role == "follower" and not peer_address:
        raise ConfigError("peer_address: required for the follower")
    steps = tuple(_optional(raw, "steps", list, "", []))
    for step in steps:
        if step not in STEPS:
            raise ConfigError(f"steps: unknown step {step!r} (known: {', '.join(STEPS)})")
    rep = raw.get("report")
    report = None
    if rep is not None:
        if not isinstance(rep, dict):
            raise ConfigError("report: must be an object or null")
        final_flush_s = _optional(rep, "final_flush_s", (int, float), "report.", 30.0)
        if final_flush_s < 0:
            raise ConfigError("report.final_flush_s: must not be negative")
        report = ReportConfig(
            url=_require(rep, "url", str, "report."),
            token=_require(rep, "token", str, "report."),
            final_flush_s=float(final_flush_s),
        )
    timeout_s = _optional(raw, "timeout_s", (int, float), "", 3600.0)
    if timeout_s <= 0:
        raise ConfigError("timeout_s: must be positive")
    return JobConfig(
        job_id=job_id,
        role=role,
        data=data,
        output_dir=output_dir,
        listen_address=listen_address,
        peer_address=peer_address,
        peer_server_name=_optional(raw, "peer_server_name", str, "", "fedsite-runtime"),
        tls=tls,
        steps=steps,
        psi=_optional(raw, "psi", dict, "", {}),
        train=_optional(raw, "train", dict, "", {}),
        tree=_optional(raw, "tree", dict, "", {}),
        score=_optional(raw, "score", dict, "", {}),
        serve=_optional(raw, "serve", dict, "", {}),
        stream=stream,
        report=report,
        timeout_s=float(timeout_s),
        allow_insecure=allow_insecure,
    )


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: cannot read {p}: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config: {p} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_config(raw)
