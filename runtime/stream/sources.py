"""Where a side's live events come from: one small interface, two implementations.

An event is one row: the example id (the key both parties receive, e.g. a click id),
the event time (seconds since the epoch, or a timestamp) and this side's columns; the
leader's events carry the label. A source hands them out in batches, each normalised
to an Arrow table whose first two columns are ``example_id`` (string) and
``event_time`` (float64 seconds), followed by this side's other columns.

A source's position is an opaque JSON value (the *offset*), stored in each committed
block's manifest; ``seek(offset)`` resumes right after it, and ``committed(offset)``
tells the source that everything up to it is durably committed (JetStream acks then).

- :class:`FolderSource` — a folder inside the data roots where CSV or Parquet part
  files keep landing (written elsewhere and renamed in, so a visible file is complete;
  names sort in landing order, e.g. ``part-000042.parquet``). Offset: ``{"file": name,
  "row": rows of it already read}``; files that sort before ``file`` are done.
- :class:`NatsSource` — a NATS JetStream subject, one JSON object per message, read
  through a durable pull consumer with explicit acks. Offset: ``{"stream_seq": n}``,
  the last stream sequence read; messages are acked once the block holding them (or
  the checkpoint carrying them as pending) is committed.

A Kafka adapter would be a third class with the same four methods.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from runtime.errors import ConfigError, DataError
from runtime.stream.params import NatsParams, StreamParams

log = logging.getLogger("fedsite.runtime.stream")

ID = "example_id"
TIME = "event_time"
T = TypeVar("T")


@dataclass
class EventBatch:
    """Events in source order: ``table`` starts with ``example_id`` and ``event_time``."""

    table: pa.Table
    offset: Any  # the source position right after these events

    @property
    def times(self) -> np.ndarray:
        return self.table.column(TIME).to_numpy()

    def __len__(self) -> int:
        return self.table.num_rows


class Source(Protocol):
    """What the join needs from a source of events."""

    def seek(self, offset: Any | None) -> None:
        """Deliver next the events right after ``offset`` (None: from the beginning)."""

    def read(self, max_events: int) -> EventBatch | None:
        """The next events available now (at most ``max_events``), or None if there are none yet."""

    def committed(self, offset: Any) -> None:
        """Everything up to ``offset`` is durably committed: the source may forget it."""

    def close(self) -> None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Columns:
    """Which columns of the raw events are the id, the time and the label."""

    id_column: str
    time_column: str
    label_column: str | None  # the leader's; None on the follower


def normalise(table: pa.Table, cols: Columns, where: str) -> pa.Table:
    """Rename and type the id and time columns, put them first; check the label is there."""
    names = table.column_names
    for what, name in (("id", cols.id_column), ("event time", cols.time_column)):
        if name not in names:
            raise DataError(f"{where}: no {what} column {name!r} (columns: {', '.join(names)})")
    if cols.label_column and cols.label_column not in names:
        raise DataError(f"{where}: no label column {cols.label_column!r} (the leader's events carry the label)")
    ids = table.column(cols.id_column)
    if ids.null_count:
        raise DataError(f"{where}: {ids.null_count} events without an id in column {cols.id_column!r}")
    if not pa.types.is_string(ids.type):
        ids = pc.cast(ids, pa.string())
    times = table.column(cols.time_column)
    if times.null_count:
        raise DataError(f"{where}: {times.null_count} events without an event time in column {cols.time_column!r}")
    try:
        if pa.types.is_string(times.type) or pa.types.is_large_string(times.type):
            times = pc.cast(times, pa.timestamp("us"))
        if pa.types.is_timestamp(times.type):
            times = pc.divide(pc.cast(pc.cast(times, pa.timestamp("us")), pa.int64()), 1e6)
        times = pc.cast(times, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"{where}: event time column {cols.time_column!r} is neither seconds since the epoch nor a timestamp ({exc})"
        ) from None
    rest = [n for n in names if n not in (cols.id_column, cols.time_column, ID, TIME)]
    return pa.table([ids, times, *(table.column(n) for n in rest)], names=[ID, TIME, *rest])


# -- folder of part files ------------------------------------------------------


class FolderSource:
    """CSV or Parquet part files landing in one folder, read in name order."""

    SUFFIXES = {"csv": (".csv",), "parquet": (".parquet", ".pq"), "auto": (".csv", ".parquet", ".pq")}

    def __init__(self, folder: str, fmt: str, cols: Columns, warn: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConfigError(
                f"data.path: {folder} is not a folder (a folder source reads the part files landing in it)"
            )
        self.fmt = fmt
        self.cols = cols
        self._warn = warn or (lambda text: log.warning("%s", text))
        self._file: str | None = None  # the file being read (None: before the first)
        self._row = 0
        self._table: pa.Table | None = None  # the current file, normalised
        self._known: set[str] = set()

    def describe(self) -> str:
        return f"folder {self.folder}"

    def seek(self, offset: Any | None) -> None:
        if offset is None:
            self._file, self._row = None, 0
        else:
            if not isinstance(offset, dict) or not isinstance(offset.get("file"), str):
                raise DataError(f"folder source: a stored offset is not a folder offset: {offset!r}")
            self._file, self._row = offset["file"], int(offset.get("row", 0))
        self._table = None
        self._known = set()

    def _names(self) -> list[str]:
        suffixes = self.SUFFIXES[self.fmt]
        try:
            names = sorted(
                e.name
                for e in os.scandir(self.folder)
                if e.is_file() and not e.name.startswith((".", "_")) and e.name.endswith(suffixes)
            )
        except OSError as exc:
            raise DataError(f"folder source: cannot list {self.folder}: {exc.strerror}") from None
        if self._file is not None:
            for name in names:
                if name < self._file and name not in self._known and self._known:
                    self._warn(
                        f"part file {name} landed after {self._file} was read; part files must land in name order, "
                        f"so its events are not read"
                    )
        self._known.update(names)
        return names

    def _load(self, name: str) -> pa.Table:
        path = self.folder / name
        try:
            if name.endswith(".csv"):
                opts = pacsv.ConvertOptions(column_types={self.cols.id_column: pa.string()})
                raw = pacsv.read_csv(path, convert_options=opts)
            else:
                raw = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"folder source: cannot read part file {name}: {exc}") from None
        return normalise(raw, self.cols, f"part file {name}")

    def read(self, max_events: int) -> EventBatch | None:
        parts: list[pa.Table] = []
        want = max_events
        names: list[str] | None = None
        while want > 0:
            if self._file is not None and self._table is None:
                if (self.folder / self._file).exists():
                    self._table = self._load(self._file)
                elif self._row:
                    raise DataError(f"folder source: part file {self._file} was read in part and is gone")
            if self._table is not None and self._row < self._table.num_rows:
                take = self._table.slice(self._row, want)
                parts.append(take)
                self._row += take.num_rows
                want -= take.num_rows
                continue
            # this file is done (or none started): the next name after it, if one landed
            if names is None:
                names = self._names()
            nxt = next((n for n in names if self._file is None or n > self._file), None)
            if nxt is None:
                break
            self._file, self._row, self._table = nxt, 0, None
        if not parts:
            return None
        table = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
        return EventBatch(table, {"file": self._file, "row": self._row})

    def committed(self, offset: Any) -> None:
        return None

    def close(self) -> None:
        self._table = None


# -- NATS JetStream ----------------------------------------------------------


class NatsSource:
    """A JetStream subject through a durable pull consumer; acks follow commits."""

    FETCH_WAIT_S = 0.05

    def __init__(self, p: NatsParams, cols: Columns, *, connect_timeout_s: float = 10.0) -> None:
        import nats  # imported here: only NATS jobs need the client

        self._nats = nats
        self.p = p
        self.cols = cols
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-source", daemon=True)
        self._thread.start()
        self._unacked: list[tuple[int, Any]] = []  # (stream sequence, message), in delivery order
        self._sub: Any = None
        self._last_seq = 0
        try:
            self._call(self._connect(connect_timeout_s), connect_timeout_s + 5)
        except BaseException:
            self.close()
            raise

    def describe(self) -> str:
        return f"NATS JetStream {self.p.stream}/{self.p.subject} at {self.p.url} (durable consumer {self.p.durable})"

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self, timeout: float) -> None:
        from nats.js.errors import NotFoundError

        try:
            self.nc = await self._nats.connect(
                self.p.url, connect_timeout=timeout, max_reconnect_attempts=-1, allow_reconnect=True
            )
        except Exception as exc:  # noqa: BLE001 - any connection failure names the server
            raise ConfigError(
                f"stream.nats.url: cannot connect to {self.p.url}: {exc.__class__.__name__} {exc}"
            ) from None
        self.js = self.nc.jetstream()
        try:
            info = await self.js.stream_info(self.p.stream)
        except NotFoundError:
            raise ConfigError(f"stream.nats.stream: no JetStream stream {self.p.stream!r} at {self.p.url}") from None
        subjects = info.config.subjects or []
        if not any(_subject_covers(s, self.p.subject) for s in subjects):
            raise ConfigError(
                f"stream.nats.subject: {self.p.subject!r} is not a subject of stream {self.p.stream!r} "
                f"(its subjects: {', '.join(subjects)})"
            )

    def seek(self, offset: Any | None) -> None:
        if offset is not None and not (isinstance(offset, dict) and isinstance(offset.get("stream_seq"), int)):
            raise DataError(f"NATS source: a stored offset is not a NATS offset: {offset!r}")
        start = 0 if offset is None else int(offset["stream_seq"])
        self._call(self._bind(start))
        self._last_seq = start
        self._unacked = []

    async def _bind(self, start: int) -> None:
        """(Re)create the job's durable consumer right after stream sequence ``start``.

        The manifests are the truth about what is committed, so on every (re)start the
        consumer is recreated at the committed sequence rather than trusting its ack
        floor (a crash between a commit and its acks would otherwise redeliver).
        """
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        try:
            await self.js.delete_consumer(self.p.stream, self.p.durable)
        except NotFoundError:
            pass
        config = ConsumerConfig(
            durable_name=self.p.durable,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL,
            opt_start_seq=start + 1 if start else None,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=24 * 3600.0,  # unacked = not yet committed: never redelivered behind our back
            max_ack_pending=-1,
            filter_subject=self.p.subject,
        )
        await self.js.add_consumer(self.p.stream, config)
        self._sub = await self.js.pull_subscribe_bind(durable=self.p.durable, stream=self.p.stream)

    async def _fetch(self, n: int) -> list[Any]:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            return list(await self._sub.fetch(batch=n, timeout=self.FETCH_WAIT_S))
        except (TimeoutError, NatsTimeout):
            return []

    def read(self, max_events: int) -> EventBatch | None:
        if self._sub is None:
            self.seek(None)
        msgs = self._call(self._fetch(min(max_events, 10_000)))
        if not msgs:
            return None
        rows = []
        for m in msgs:
            seq = int(m.metadata.sequence.stream)
            try:
                row = json.loads(m.data)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"NATS message {seq} on {m.subject}: not a JSON object ({exc})") from None
            if not isinstance(row, dict):
                raise DataError(f"NATS message {seq} on {m.subject}: not a JSON object")
            rows.append(row)
            self._unacked.append((seq, m))
            self._last_seq = max(self._last_seq, seq)
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(
                f"NATS messages {msgs[0].metadata.sequence.stream}..: inconsistent columns ({exc})"
            ) from None
        return EventBatch(normalise(table, self.cols, f"NATS subject {self.p.subject}"), {"stream_seq": self._last_seq})

    def committed(self, offset: Any) -> None:
        upto = int(offset["stream_seq"]) if isinstance(offset, dict) else 0
        done = [m for s, m in self._unacked if s <= upto]
        self._unacked = [(s, m) for s, m in self._unacked if s > upto]
        if done:
            self._call(self._ack(done))

    async def _ack(self, msgs: list[Any]) -> None:
        for m in msgs:
            await m.ack()
        await self.nc.flush()

    async def _aclose(self) -> None:
        nc = getattr(self, "nc", None)
        if nc is not None and not nc.is_closed:
            await nc.close()

    def close(self) -> None:
        if self._loop.is_running():
            try:
                self._call(self._aclose(), 10)
            except Exception as exc:  # noqa: BLE001 - closing must not hide the job's outcome
                log.info("closing the NATS connection: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()


def _subject_covers(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def open_source(
    params: StreamParams, data_path: str, cols: Columns, warn: Callable[[str], None] | None = None
) -> Source:
    """The source the config names."""
    if params.source == "nats":
        assert params.nats is not None  # validated with the params
        return NatsSource(params.nats, cols)
    if not data_path:
        raise ConfigError("data.path: required (the folder where the part files land)")
    return FolderSource(data_path, params.format, cols, warn)
