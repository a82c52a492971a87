"""The ``stream`` block of a job config, validated, with defaults.

::

    "stream": {
      "source": "folder" | "nats",           # folder (default): part files landing in data.path
      "time_column": "event_time",           # event time: seconds since the epoch, or a timestamp column
      "format": "auto" | "csv" | "parquet",  # folder: part file format (auto: by extension)
      "nats": {"url": "nats://127.0.0.1:4222", "stream": "CLICKS", "subject": "clicks.alpha",
               "durable": "fedsite-<job>-<role>"},   # nats source only; durable defaults as shown
      "max_delay_s": 600,         # a match: same example id, event times at most this far apart
      "lateness_s": 60,           # how far out of event-time order a source may deliver (watermark slack)
      "max_batch_events": 65536,  # events read per round at most
      "poll_interval_s": 0.1,     # pause of an idle round
      "stop_when_idle_s": null,   # finish once both sources delivered nothing this long (backfills, tests)
      "idle_timeout_s": 300,      # a side whose source is quiet this long stops holding the join back:
                                  # its watermark follows the partner's (null: never)
      "peer_timeout_s": 120,      # silence from the partner that ends a session
      "connect_timeout_s": 600,   # how long a side waits for its partner (at start and after a restart)
      "stop_file": null           # optional path: the job stops cleanly once this file exists
    }

The id and label columns are the config's ``data.id_column`` and ``data.label_column``
(the leader's events carry the label). See docs/streaming.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runtime.errors import ConfigError

SOURCES = ("folder", "nats")
FORMATS = ("auto", "csv", "parquet")
# The parameters both runtimes must agree on (compared at the handshake).
SHARED = ("max_delay_s", "lateness_s")


@dataclass(frozen=True)
class NatsParams:
    url: str
    stream: str
    subject: str
    durable: str


@dataclass(frozen=True)
class StreamParams:
    source: str = "folder"
    time_column: str = "event_time"
    format: str = "auto"
    nats: NatsParams | None = None
    max_delay_s: float = 600.0
    lateness_s: float = 60.0
    max_batch_events: int = 65536
    poll_interval_s: float = 0.1
    stop_when_idle_s: float | None = None
    idle_timeout_s: float | None = 300.0
    peer_timeout_s: float = 120.0
    connect_timeout_s: float = 600.0
    stop_file: str | None = None

    def shared(self) -> str:
        return json.dumps({k: getattr(self, k) for k in SHARED}, sort_keys=True)


KNOWN = {
    "source",
    "time_column",
    "format",
    "nats",
    "max_delay_s",
    "lateness_s",
    "max_batch_events",
    "poll_interval_s",
    "stop_when_idle_s",
    "idle_timeout_s",
    "peer_timeout_s",
    "connect_timeout_s",
    "stop_file",
    # read by the continual trainer (runtime/stream/train.py), not by the join
    "publish_every_blocks",
    "publish_every_minutes",
    "stop_after_versions",
}


def _number(raw: dict[str, Any], key: str, default: float, *, minimum: float = 0.0, strict: bool = False) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"stream.{key}: must be a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ConfigError(f"stream.{key}: must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)


def _text(raw: dict[str, Any], key: str, default: str, where: str = "stream.") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}{key}: must be a non-empty string, got {value!r}")
    return value


def parse_stream_params(raw: dict[str, Any], *, job_id: str, role: str) -> StreamParams:
    """Validate the ``stream`` block; raise ConfigError naming the first bad field."""
    if not isinstance(raw, dict):
        raise ConfigError("stream: must be an object")
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise ConfigError(f"stream.{unknown[0]}: unknown parameter (known: {', '.join(sorted(KNOWN))})")
    source = raw.get("source", "folder")
    if source not in SOURCES:
        raise ConfigError(f"stream.source: must be one of {', '.join(SOURCES)}, got {source!r}")
    fmt = raw.get("format", "auto")
    if fmt not in FORMATS:
        raise ConfigError(f"stream.format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    nats = None
    if source == "nats":
        n = raw.get("nats")
        if not isinstance(n, dict):
            raise ConfigError(
                "stream.nats: required (an object with url, stream, subject) when stream.source is 'nats'"
            )
        unknown = sorted(set(n) - {"url", "stream", "subject", "durable"})
        if unknown:
            raise ConfigError(f"stream.nats.{unknown[0]}: unknown parameter (known: durable, stream, subject, url)")
        url = _text(n, "url", "nats://127.0.0.1:4222", "stream.nats.")
        if not url.startswith(("nats://", "tls://")):
            raise ConfigError(f"stream.nats.url: must be a nats:// or tls:// URL, got {url!r}")
        durable = _text(n, "durable", f"fedsite-{job_id}-{role}", "stream.nats.")
        if any(c in durable for c in " .*>"):
            raise ConfigError(f"stream.nats.durable: must not contain spaces, '.', '*' or '>', got {durable!r}")
        nats = NatsParams(
            url=url,
            stream=_text(n, "stream", "", "stream.nats."),
            subject=_text(n, "subject", "", "stream.nats."),
            durable=durable,
        )
    elif "nats" in raw:
        raise ConfigError("stream.nats: only for stream.source 'nats'")
    batch = raw.get("max_batch_events", 65536)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"stream.max_batch_events: must be a positive integer, got {batch!r}")
    idle = raw.get("stop_when_idle_s")
    quiet = raw.get("idle_timeout_s", 300.0)
    stop_file = raw.get("stop_file")
    if stop_file is not None and (not isinstance(stop_file, str) or not stop_file):
        raise ConfigError(f"stream.stop_file: must be a path, got {stop_file!r}")
    return StreamParams(
        source=source,
        time_column=_text(raw, "time_column", "event_time"),
        format=fmt,
        nats=nats,
        max_delay_s=_number(raw, "max_delay_s", 600.0),
        lateness_s=_number(raw, "lateness_s", 60.0),
        max_batch_events=batch,
        poll_interval_s=_number(raw, "poll_interval_s", 0.1, strict=True),
        stop_when_idle_s=None if idle is None else _number(raw, "stop_when_idle_s", 0.0),
        idle_timeout_s=None if quiet is None else _number(raw, "idle_timeout_s", 300.0, strict=True),
        peer_timeout_s=_number(raw, "peer_timeout_s", 120.0, strict=True),
        connect_timeout_s=_number(raw, "connect_timeout_s", 600.0, strict=True),
        stop_file=stop_file,
    )
