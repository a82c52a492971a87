"""Streaming inspection of a data file: schema, id uniqueness, label check, stats, checksum.

Reads the file once, in constant memory per column, except the id check, which
keeps one 8-byte hash per row (800 MB for 100M rows) and confirms any hash
collision with a second pass, so a 5 GB CSV is never loaded into memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from apps.core.errors import ServiceError

DISTINCT_LIMIT = 50  # distinct values are counted only for small-cardinality columns
CHUNK = 1 << 20


class DataFileError(ServiceError):
    """The file cannot be registered; the message names the problem."""


@dataclass
class ColumnStats:
    """Running statistics of one column, in constant memory."""

    name: str
    nulls: int = 0
    count: int = 0
    numeric: int = 0
    bools: int = 0
    total: float = 0.0
    minimum: float | None = None
    maximum: float | None = None
    distinct: set[str] | None = field(default_factory=set)

    def add(self, value: str) -> None:
        if value == "":
            self.nulls += 1
            return
        self.count += 1
        if self.distinct is not None:
            self.distinct.add(value)
            if len(self.distinct) > DISTINCT_LIMIT:
                self.distinct = None
        try:
            number = float(value)
        except ValueError:
            if value.lower() in ("true", "false"):
                self.bools += 1
            return
        if math.isnan(number) or math.isinf(number):
            return
        self.numeric += 1
        self.total += number
        self.minimum = number if self.minimum is None else min(self.minimum, number)
        self.maximum = number if self.maximum is None else max(self.maximum, number)

    def add_numeric(self, value: float) -> None:
        self.add(repr(value))

    @property
    def type(self) -> str:
        if self.count == 0:
            return "empty"
        if self.numeric == self.count:
            is_int = (
                self.minimum is not None
                and self.distinct is not None
                and all(float(v).is_integer() for v in self.distinct)
            )
            return "integer" if is_int or self._looks_integer() else "float"
        if self.bools == self.count:
            return "boolean"
        return "string"

    def _looks_integer(self) -> bool:
        return (
            self.minimum is not None
            and self.maximum is not None
            and self.minimum.is_integer()
            and self.maximum.is_integer()
            and self.total.is_integer()
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "nulls": self.nulls, "count": self.count}
        if self.numeric and self.numeric == self.count:
            out.update(min=self.minimum, max=self.maximum, mean=self.total / self.numeric)
        if self.distinct is not None:
            out["distinct"] = len(self.distinct)
        return out


@dataclass
class Inspection:
    """What registration stores about a file."""

    format: str
    schema: list[dict[str, str]]
    row_count: int
    stats: dict[str, dict[str, Any]]
    checksum: str
    size_bytes: int


Progress = Callable[[int, int], None]  # (bytes done, bytes in all): long inspections report as they go


class _HashingReader(io.RawIOBase):
    """Wraps a binary file and hashes every byte read through it (and tells `progress`)."""

    def __init__(self, raw: BinaryIO, size: int = 0, progress: Progress | None = None) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.done = 0
        self._size = size
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        self.sha.update(data)
        n = len(data)
        b[:n] = data
        self.done += n
        if self._progress is not None and n:
            self._progress(self.done, self._size)
        return n


def _id_hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")


def _find_duplicates(hashes: array, all_ids: Any) -> list[str]:
    """Return a few real duplicate ids, or [] when 64-bit hashes merely collided."""
    import numpy as np

    arr = np.frombuffer(hashes, dtype=np.uint64)
    if arr.size < 2:
        return []
    s = np.sort(arr)
    dup_hashes = set(s[1:][s[1:] == s[:-1]].tolist())
    if not dup_hashes:
        return []
    seen: set[str] = set()
    dups: list[str] = []
    for value in all_ids():
        if _id_hash(value) in dup_hashes:
            if value in seen and value not in dups:
                dups.append(value)
                if len(dups) >= 5:
                    break
            seen.add(value)
    return dups


def _check_columns(header: list[str], id_column: str, label_column: str | None) -> None:
    if id_column not in header:
        raise DataFileError(
            f"id column {id_column!r} is not in the file (columns: {', '.join(header)})", field="id_column"
        )
    if label_column and label_column not in header:
        raise DataFileError(
            f"label column {label_column!r} is not in the file (columns: {', '.join(header)})", field="label_column"
        )
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataFileError(f"column {name!r} appears twice in the header", field="uri")
        seen.add(name)


def _check_label(stats: ColumnStats) -> None:
    if stats.nulls:
        raise DataFileError(f"label column {stats.name!r} has {stats.nulls} empty values", field="label_column")
    if stats.count and stats.numeric != stats.count and stats.bools != stats.count:
        raise DataFileError(f"label column {stats.name!r} must be binary or numeric", field="label_column")


def inspect_csv(path: Path, id_column: str, label_column: str | None, progress: Progress | None = None) -> Inspection:
    size = path.stat().st_size
    if size == 0:
        raise DataFileError(f"{path.name} is empty", field="uri")

    def rows(fh: io.TextIOBase):
        return csv.reader(fh, strict=True)

    with path.open("rb") as raw:
        hashing = _HashingReader(raw, size, progress)
        text = io.TextIOWrapper(io.BufferedReader(hashing, CHUNK), encoding="utf-8", errors="strict", newline="")
        reader = rows(text)
        try:
            header = next(reader, None)
            if header is None or header == []:
                raise DataFileError(f"{path.name} has no header row", field="uri")
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            _check_columns(header, id_column, label_column)
            width = len(header)
            id_idx = header.index(id_column)
            columns = [ColumnStats(name) for name in header]
            hashes = array("Q")
            count = 0
            for row in reader:
                if not row:
                    continue
                if len(row) != width:
                    raise DataFileError(
                        f"line {reader.line_num}: expected {width} fields, found {len(row)}", field="uri"
                    )
                ident = row[id_idx]
                if ident == "":
                    raise DataFileError(f"line {reader.line_num}: id column {id_column!r} is empty", field="id_column")
                hashes.append(_id_hash(ident))
                for col, value in zip(columns, row, strict=True):
                    col.add(value)
                count += 1
        except UnicodeDecodeError as exc:
            raise DataFileError(
                f"{path.name} is not UTF-8 (near line {reader.line_num + 1}: byte {exc.object[exc.start]:#04x})",
                field="uri",
            ) from None
        except csv.Error as exc:
            raise DataFileError(f"line {reader.line_num}: malformed CSV ({exc})", field="uri") from None
    if count == 0:
        raise DataFileError(f"{path.name} has a header but no rows", field="uri")

    def ids():
        with path.open(encoding="utf-8", newline="") as fh:
            r = csv.reader(fh)
            next(r)
            for row in r:
                if row:
                    yield row[id_idx]

    dups = _find_duplicates(hashes, ids)
    if dups:
        raise DataFileError(
            f"id column {id_column!r} has duplicates, e.g. {', '.join(repr(d) for d in dups)}", field="id_column"
        )
    if label_column:
        _check_label(columns[header.index(label_column)])
    stats = {c.name: c.as_dict() for c in columns}
    schema = [{"name": c.name, "type": stats[c.name]["type"]} for c in columns]
    return Inspection("csv", schema, count, stats, "sha256:" + hashing.sha.hexdigest(), size)


def inspect_parquet(
    path: Path, id_column: str, label_column: str | None, progress: Progress | None = None
) -> Inspection:
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = path.stat().st_size
    if size == 0:
        raise DataFileError(f"{path.name} is empty", field="uri")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataFileError(f"{path.name} is not a readable Parquet file ({exc})", field="uri") from None
    header = pf.schema_arrow.names
    _check_columns(header, id_column, label_column)
    columns = {name: ColumnStats(name) for name in header}
    arrow_types = {f.name: f.type for f in pf.schema_arrow}
    hashes = array("Q")
    count = 0
    for batch in pf.iter_batches(batch_size=65_536):
        for name in header:
            col = batch.column(name)
            stats = columns[name]
            for value in col.to_pylist():
                stats.add("" if value is None else (value if isinstance(value, str) else repr(value)))
        for value in batch.column(id_column).to_pylist():
            if value is None or value == "":
                raise DataFileError(f"row {count + 1}: id column {id_column!r} is empty", field="id_column")
            hashes.append(_id_hash(str(value)))
            count += 1
        if progress is not None and pf.metadata.num_rows:
            progress(round(size * count / pf.metadata.num_rows), size)
    if count == 0:
        raise DataFileError(f"{path.name} has no rows", field="uri")

    def ids():
        for batch in pf.iter_batches(batch_size=65_536, columns=[id_column]):
            yield from (str(v) for v in batch.column(0).to_pylist())

    dups = _find_duplicates(hashes, ids)
    if dups:
        raise DataFileError(
            f"id column {id_column!r} has duplicates, e.g. {', '.join(repr(d) for d in dups)}", field="id_column"
        )
    if label_column:
        _check_label(columns[label_column])
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    stats = {name: c.as_dict() for name, c in columns.items()}
    schema = [{"name": name, "type": str(arrow_types[name])} for name in header]
    return Inspection("parquet", schema, count, stats, "sha256:" + sha.hexdigest(), size)


def inspect_file(path: Path, id_column: str, label_column: str | None, progress: Progress | None = None) -> Inspection:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return inspect_parquet(path, id_column, label_column, progress)
    if suffix in (".csv", ".txt", ".tsv"):
        return inspect_csv(path, id_column, label_column, progress)
    raise DataFileError(f"{path.name}: unsupported format {suffix or '(none)'} (use .csv or .parquet)", field="uri")
