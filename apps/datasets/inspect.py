"""Streaming inspection of a data file: schema, id uniqueness, label check, stats, checksum.

Reads the file once, in constant memory per column, except the id check, which
keeps one 8-byte hash per row (800 MB for 100M rows) and confirms any hash
collision with a second pass, so a 5 GB CSV is never loaded into memory.

CSV goes through Arrow's streaming reader a 1 MB batch at a time, with the
statistics computed per batch (about 25 MB/s here, 6-7x the row-by-row reader;
`bench/registration.py`); a file with anything unusual falls back to Python's
csv module, which defines the semantics and names the line of any problem.
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
        self.add_kind(value)

    def add_kind(self, value: str) -> None:
        """The number/boolean part of `add` for a non-empty value (already counted)."""
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

    def __init__(
        self,
        raw: BinaryIO,
        size: int = 0,
        progress: Progress | None = None,
        watch: Callable[[bytes], None] | None = None,
    ) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.done = 0
        self._size = size
        self._progress = progress
        self._watch = watch

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        self.sha.update(data)
        if self._watch is not None:
            self._watch(data)
        n = len(data)
        b[:n] = data
        self.done += n
        if self._progress is not None and n:
            self._progress(self.done, self._size)
        return n


def _id_hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")


def _find_duplicates(hashes: array, all_ids: Any, hash_many: Callable[[list[str]], Any] | None = None) -> list[str]:
    """Return a few real duplicate ids, or [] when 64-bit hashes merely collided.

    `hash_many` is the hash the ids were recorded with, for many at once (default: _id_hash).
    """
    import numpy as np

    arr = np.frombuffer(hashes, dtype=np.uint64)
    if arr.size < 2:
        return []
    s = np.sort(arr)
    dup_hashes = set(s[1:][s[1:] == s[:-1]].tolist())
    if not dup_hashes:
        return []
    hash_of = hash_many or (lambda values: [_id_hash(v) for v in values])
    seen: set[str] = set()
    dups: list[str] = []

    def check(values: list[str]) -> bool:
        for value, h in zip(values, hash_of(values), strict=True):
            if int(h) in dup_hashes:
                if value in seen and value not in dups:
                    dups.append(value)
                    if len(dups) >= 5:
                        return True
                seen.add(value)
        return False

    chunk: list[str] = []
    for value in all_ids():
        chunk.append(value)
        if len(chunk) >= 65_536:
            if check(chunk):
                return dups
            chunk = []
    if chunk:
        check(chunk)
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


# -- CSV, fast: Arrow's streaming reader, column statistics a batch at a time ------------------------
#
# Same results as the row-by-row reader below (a test compares the two on generated files), several
# times faster. Anything unusual -- quotes, a lone CR, a parse or UTF-8 error, an empty id, no rows --
# hands the file to the row-by-row reader, which has the exact semantics and names the line.

FAST_BLOCK = 1 << 20  # bytes per batch: memory stays a few MB whatever the file's size
HEADER_PEEK = 1 << 16
# A value Python's float() might accept starts (after whitespace and a sign) with a digit, a point,
# or the i/n of inf/nan; anything else is surely not a number (a superset is fine: it only costs speed).
_WS = r"[\s\x0b\x1c-\x1f\x85\p{Z}]"
_MAYBE_NUMBER = rf"^{_WS}*[+-]?(?:\p{{Nd}}|\.|[iInN])"


class _SlowPath(Exception):
    """This file needs the row-by-row reader."""


class _Scan:
    """Watches the raw bytes for what the fast reader does not treat like Python's csv module."""

    def __init__(self) -> None:
        self.unusual = False
        self._cr_at_end = False

    def __call__(self, data: bytes) -> None:
        if self.unusual or not data:
            return
        if b'"' in data:
            self.unusual = True
            return
        crs = data.count(b"\r")
        lone = crs - data.count(b"\r\n") - (1 if data.endswith(b"\r") else 0)
        if lone or (self._cr_at_end and not data.startswith(b"\n")):
            self.unusual = True
        self._cr_at_end = data.endswith(b"\r")

    def finish(self) -> None:
        if self._cr_at_end:
            self.unusual = True


def _add_batch(stats: ColumnStats, arr: Any) -> None:
    """ColumnStats.add for every value of a string array, with the same results, mostly vectorized."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    empty = pc.equal(arr, "")
    stats.nulls += pc.sum(empty).as_py() or 0
    values = pc.filter(arr, pc.invert(empty))
    if len(values) == 0:
        return
    stats.count += len(values)
    if stats.distinct is not None:
        stats.distinct.update(pc.unique(values).slice(0, DISTINCT_LIMIT + 1).to_pylist())
        if len(stats.distinct) > DISTINCT_LIMIT:
            stats.distinct = None
    maybe = pc.match_substring_regex(values, _MAYBE_NUMBER)
    if pc.all(maybe).as_py():
        try:
            numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            numbers = None
        if numbers is not None:
            finite = numbers[np.isfinite(numbers)]
            if finite.size:
                stats.numeric += int(finite.size)
                # Left to right, as the row-by-row reader adds: the mean is the same to the last bit.
                stats.total = float(np.cumsum(np.concatenate(([stats.total], finite)))[-1])
                low, high = float(finite.min()), float(finite.max())
                stats.minimum = low if stats.minimum is None else min(stats.minimum, low)
                stats.maximum = high if stats.maximum is None else max(stats.maximum, high)
            return
    # Mixed or text: only the values that might be numbers go through float(), in row order.
    lowered = pc.utf8_lower(pc.filter(values, pc.invert(maybe)))
    stats.bools += pc.sum(pc.is_in(lowered, value_set=pa.array(["true", "false"]))).as_py() or 0
    for value in pc.filter(values, maybe).to_pylist():
        stats.add_kind(value)


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as fh:
        head = fh.read(HEADER_PEEK)
    line, newline, _ = head.partition(b"\n")
    if not newline or b'"' in line or b"\r" in line[:-1]:
        raise _SlowPath
    try:
        header = next(csv.reader([line.rstrip(b"\r").decode("utf-8")]), None)
    except (UnicodeDecodeError, csv.Error):
        raise _SlowPath from None
    if not header:
        raise _SlowPath
    if header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    return header


def _inspect_csv_fast(
    path: Path, size: int, id_column: str, label_column: str | None, progress: Progress | None
) -> Inspection:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    header = _csv_header(path)
    _check_columns(header, id_column, label_column)
    id_idx = header.index(id_column)
    columns = [ColumnStats(name) for name in header]
    hashes = array("Q")
    scan = _Scan()
    count = 0
    with path.open("rb") as raw:
        hashing = _HashingReader(raw, size, progress, scan)
        try:
            reader = pacsv.open_csv(
                io.BufferedReader(hashing, CHUNK),
                read_options=pacsv.ReadOptions(
                    skip_rows=1, column_names=header, block_size=FAST_BLOCK, use_threads=False
                ),
                parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in header}, strings_can_be_null=False
                ),
            )
            for batch in reader:
                if scan.unusual:
                    raise _SlowPath
                ids = batch.column(id_idx)
                if pc.any(pc.equal(ids, "")).as_py():
                    raise _SlowPath  # an empty id: the row-by-row reader names its line
                hashes.frombytes(_hash_many(ids).tobytes())
                for col, values in zip(columns, batch.columns, strict=True):
                    _add_batch(col, values)
                count += batch.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError):
            raise _SlowPath from None
        while hashing.readinto(bytearray(CHUNK)):  # the checksum covers every byte, as the slow path's does
            pass
    scan.finish()
    if scan.unusual or count == 0:
        raise _SlowPath

    return _finish_csv(
        path, size, header, columns, hashes, count, hashing.sha.hexdigest(), id_column, label_column, _hash_many
    )


_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64's finalizer
_BASE = 0x100000001B3  # odd: a polynomial over the bytes modulo 2^64
HASH_SLICE = 8192


def _hash_many(values: Any) -> Any:
    """64-bit hashes of many ids at once, from the UTF-8 bytes in Arrow's buffers (no Python objects).

    Equal ids always hash equal; the duplicate check confirms every candidate exactly, so a
    collision costs only a second look. The fast reader's _id_hash.
    """
    import numpy as np
    import pyarrow as pa

    arr = values if isinstance(values, pa.Array) else pa.array(values, type=pa.string())
    arr = arr.cast(pa.large_string())
    if len(arr) > HASH_SLICE:  # bounded temporaries: 8 bytes per byte of ids, a slice at a time
        return np.concatenate([_hash_many(arr.slice(i, HASH_SLICE)) for i in range(0, len(arr), HASH_SLICE)])
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    pos = np.arange(data.size, dtype=np.int64) - np.repeat(starts, lengths)
    powers = np.ones(int(lengths.max()) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(1, powers.size):
            powers[i] = powers[i - 1] * np.uint64(_BASE)
        h = np.zeros(n, dtype=np.uint64)
        nonempty = lengths > 0
        terms = (data.astype(np.uint64) + np.uint64(1)) * powers[pos]
        h[nonempty] = np.add.reduceat(terms, starts[nonempty])
        h ^= lengths.astype(np.uint64) * np.uint64(_MIX2)
        h ^= h >> np.uint64(30)
        h *= np.uint64(_MIX1)
        h ^= h >> np.uint64(27)
        h *= np.uint64(_MIX2)
        h ^= h >> np.uint64(31)
    return h


def _finish_csv(path, size, header, columns, hashes, count, sha, id_column, label_column, hash_many=None) -> Inspection:
    """What both CSV readers end with: the exact duplicate check, the label check, the result."""
    id_idx = header.index(id_column)

    def ids():
        with path.open(encoding="utf-8", newline="") as fh:
            r = csv.reader(fh)
            next(r)
            for row in r:
                if row:
                    yield row[id_idx]

    dups = _find_duplicates(hashes, ids, hash_many)
    if dups:
        raise DataFileError(
            f"id column {id_column!r} has duplicates, e.g. {', '.join(repr(d) for d in dups)}", field="id_column"
        )
    if label_column:
        _check_label(columns[header.index(label_column)])
    stats = {c.name: c.as_dict() for c in columns}
    schema = [{"name": c.name, "type": stats[c.name]["type"]} for c in columns]
    return Inspection("csv", schema, count, stats, "sha256:" + sha, size)


def inspect_csv(path: Path, id_column: str, label_column: str | None, progress: Progress | None = None) -> Inspection:
    size = path.stat().st_size
    if size == 0:
        raise DataFileError(f"{path.name} is empty", field="uri")
    try:
        return _inspect_csv_fast(path, size, id_column, label_column, progress)
    except _SlowPath:
        return inspect_csv_rows(path, id_column, label_column, progress)


def inspect_csv_rows(
    path: Path, id_column: str, label_column: str | None, progress: Progress | None = None
) -> Inspection:
    """The row-by-row reader (Python's csv module): exact semantics, names the line of any problem."""
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

    return _finish_csv(path, size, header, columns, hashes, count, hashing.sha.hexdigest(), id_column, label_column)


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
