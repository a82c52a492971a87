"""Plumbing shared by the runtime's two-party job kinds (split NN, trees): handshake checks, messages, files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError, DataError, PeerError


def check_hello(mine: Any, theirs: Any, *, version: int, protocol: str, stage: str) -> None:
    """Both sides run this on the other's hello; a mismatch fails the job on both.

    `mine` and `theirs` are the kind's Hello messages (protocol_version, role, job_id, mode,
    rows, ids_digest, shared_params); `protocol` names the protocol and `stage` the job kind
    in the messages.
    """
    if theirs.protocol_version != version:
        raise PeerError(f"the partner speaks {protocol} protocol {theirs.protocol_version}, this runtime {version}")
    if theirs.role == mine.role:
        raise ConfigError(f"role: both sides are configured as {mine.role}")
    if theirs.job_id != mine.job_id:
        raise ConfigError(f"job_id: this side runs job {mine.job_id}, the partner job {theirs.job_id}")
    if theirs.mode != mine.mode:
        raise ConfigError(f"the partner runs '{theirs.mode}' while this side runs '{mine.mode}'")
    if theirs.rows != mine.rows:
        raise DataError(
            f"misaligned data: this side has {mine.rows} rows, the partner {theirs.rows}; align the datasets (PSI) again"
        )
    if theirs.ids_digest != mine.ids_digest:
        raise DataError(
            "misaligned data: the ids (or their order) differ from the partner's; align the datasets (PSI) again"
        )
    if theirs.shared_params != mine.shared_params:
        a, b = json.loads(mine.shared_params or "{}"), json.loads(theirs.shared_params or "{}")
        diff = ", ".join(
            f"{k}: {a.get(k)!r} here, {b.get(k)!r} there" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
        )
        raise ConfigError(f"{stage}: parameters differ between the sides ({diff})")


def expect(msg: Any, body: str) -> Any:
    """The message's `body` field, or a protocol error naming what came instead."""
    got = msg.WhichOneof("body")
    if got != body:
        raise PeerError(f"protocol error: expected {body} from the partner, got {got}")
    return getattr(msg, body)


def clean(obj: Any) -> Any:
    """NaN and infinities become null, so result files are strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    tmp.replace(path)
