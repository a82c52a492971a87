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


def _find_duplicates(
    hashes: array, all_ids: Any, hash_many: Callable[[list[str]], Any] | None = None
) -> list[tuple[str, str, str]]:
    """Return a few real duplicate ids as (value, where first seen, where again), or [] when hashes merely collided.

    `all_ids()` yields (id, where) pairs in file order ("line 4", "row 4"); `hash_many` is the hash
    the ids were recorded with, for many at once (default: _id_hash).
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
    seen: dict[str, str] = {}
    dups: list[tuple[str, str, str]] = []
    reported: set[str] = set()

    def check(chunk: list[tuple[str, str]]) -> bool:
        values = [value for value, _ in chunk]
        for (value, where), h in zip(chunk, hash_of(values), strict=True):
            if int(h) in dup_hashes:
                if value in seen and value not in reported:
                    dups.append((value, seen[value], where))
                    reported.add(value)
                    if len(dups) >= 5:
                        return True
                seen.setdefault(value, where)
        return False

    chunk: list[tuple[str, str]] = []
    for pair in all_ids():
        chunk.append(pair)
        if len(chunk) >= 65_536:
            if check(chunk):
                return dups
            chunk = []
    if chunk:
        check(chunk)
    return dups


def _duplicates_error(id_column: str, dups: list[tuple[str, str, str]]) -> DataFileError:
    (value, first, again), *more = dups
    others = f"; also {', '.join(repr(v) for v, _, _ in more)}" if more else ""
    return DataFileError(
        f"id column {id_column!r} has duplicates, e.g. {value!r} on {again} (first on {first}){others}",
        field="id_column",
    )


def _check_columns(header: list[str], id_column: str, label_column: str | None) -> None:
    for position, name in enumerate(header, 1):
        if "\x00" in name:  # PostgreSQL cannot store it (schema and stats are JSON)
            raise DataFileError(f"line 1, field {position}: the column name contains a NUL byte", field="uri")
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


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def label_problem(name: str, stats: dict[str, Any], values: set[str] | None = None) -> str | None:
    """Why column `name` (its statistics, as stored) cannot be a training label, or None if it can.

    A label is binary: every row 0 or 1, and both classes present. `values` (the distinct values,
    when registration still has them) makes the message show what was found.
    """
    nulls, count, distinct = stats.get("nulls") or 0, stats.get("count") or 0, stats.get("distinct")
    if nulls:
        return f"label column {name!r} has {nulls} empty values"
    if count == 0:
        return f"label column {name!r} is empty"
    if stats.get("type") not in ("integer", "float"):
        shown = f"; found {', '.join(repr(v) for v in sorted(values)[:5])}" if values else ""
        return f"label column {name!r} must be binary, 0 or 1{shown}"
    if distinct is None:
        return f"label column {name!r} has more than {DISTINCT_LIMIT} classes; a label must be binary, 0 or 1"
    classes = sorted({float(v) for v in values}) if values is not None else None
    shown = f" ({', '.join(_number_text(c) for c in classes[:5])})" if classes else ""
    if distinct == 1:
        return f"label column {name!r} has a single class{shown}: training needs rows of both classes, 0 and 1"
    if distinct > 2:
        return f"label column {name!r} has {distinct} classes{shown}; a label must be binary, 0 or 1"
    if stats.get("min") != 0 or stats.get("max") != 1:
        found = ", ".join(_number_text(c) for c in classes) if classes else f"{stats.get('min')} to {stats.get('max')}"
        return f"label column {name!r} must be binary, 0 or 1; found {found}"
    return None


def _check_label(stats: ColumnStats) -> None:
    problem = label_problem(stats.name, stats.as_dict(), stats.distinct)
    if problem:
        raise DataFileError(problem, field="label_column")


# What a file really is, from its first bytes: a compressed, binary or UTF-16 file is named as such,
# not reported as a CSV with a bad byte somewhere.
MAGIC: list[tuple[bytes, str]] = [
    (b"\x1f\x8b", "a gzip-compressed file (decompress it, e.g. gunzip, and register the result)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image, not a data table"),
    (b"\xff\xd8\xff", "a JPEG image, not a data table"),
    (b"GIF8", "a GIF image, not a data table"),
    (b"%PDF", "a PDF document, not a data table"),
    (b"PK\x03\x04", "a zip archive (extract it and register the file inside)"),
    (b"BZh", "a bzip2-compressed file (decompress it and register the result)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file (decompress it and register the result)"),
    (b"(\xb5/\xfd", "a zstd-compressed file (decompress it and register the result)"),
    (b"\xff\xfe\x00\x00", "UTF-32 text (save it as UTF-8)"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (save it as UTF-8)"),
    (b"\xff\xfe", "UTF-16 text (save it as UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (save it as UTF-8)"),
]


def _sniff(path: Path, *, expect: str) -> None:
    """Refuse a file whose first bytes say it is something other than `expect` ("csv" or "parquet")."""
    with path.open("rb") as fh:
        head = fh.read(16)
    what = next((name for magic, name in MAGIC if head.startswith(magic)), None)
    if what is None and len(head) >= 4 and b"\x00" not in head[:1] + head[2:3] and head[1] == 0 == head[3]:
        what = "UTF-16 text (save it as UTF-8)"  # ASCII as UTF-16LE without a BOM: every other byte is 0
    if what is None and len(head) >= 4 and head[0] == 0 == head[2] and head[1] and head[3]:
        what = "UTF-16 text (save it as UTF-8)"
    if what is None and expect == "csv" and head.startswith(b"PAR1"):
        what = "a Parquet file (name it .parquet)"
    if what is not None:
        raise DataFileError(f"{path.name} is {what}", field="uri")


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
        if b'"' in data or b"\x00" in data:  # quotes, NUL bytes: the row-by-row reader decides
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

    _sniff(path, expect="csv")
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
                    yield row[id_idx], f"line {r.line_num}"

    dups = _find_duplicates(hashes, ids, hash_many)
    if dups:
        raise _duplicates_error(id_column, dups)
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
    _sniff(path, expect="csv")
    nul = [False]  # set once a NUL byte has been read: only then are the values searched for one

    def watch(data: bytes) -> None:
        if not nul[0] and b"\x00" in data:
            nul[0] = True

    last_row_end = 0  # the line the last complete record ended on
    with path.open("rb") as raw:
        hashing = _HashingReader(raw, size, progress, watch)
        text = io.TextIOWrapper(io.BufferedReader(hashing, CHUNK), encoding="utf-8", errors="strict", newline="")
        reader = csv.reader(text, strict=True)
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
            last_row_end = reader.line_num
            for row in reader:
                if not row:
                    last_row_end = reader.line_num
                    continue
                if len(row) != width:
                    raise DataFileError(
                        f"line {reader.line_num}: expected {width} fields, found {len(row)}", field="uri"
                    )
                if nul[0]:
                    for position, value in enumerate(row, 1):
                        if "\x00" in value:
                            raise DataFileError(
                                f"line {reader.line_num}, field {position} ({header[position - 1]!r}): "
                                "the value contains a NUL byte",
                                field="uri",
                            )
                ident = row[id_idx]
                if ident == "":
                    raise DataFileError(f"line {reader.line_num}: id column {id_column!r} is empty", field="id_column")
                hashes.append(_id_hash(ident))
                for col, value in zip(columns, row, strict=True):
                    col.add(value)
                count += 1
                last_row_end = reader.line_num
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise _malformed(path, exc, reader.line_num, last_row_end + 1) from None
    if count == 0:
        raise DataFileError(f"{path.name} has a header but no rows", field="uri")

    return _finish_csv(path, size, header, columns, hashes, count, hashing.sha.hexdigest(), id_column, label_column)


LOCATE_LIMIT = 64 << 20  # how far an error's exact place is searched for (the file was read that far already)


def _not_utf8(path: Path) -> DataFileError:
    """Where the first byte that is not UTF-8 is: line and column (the text decoder reads ahead)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    line, col, done = 1, 0, 0  # col: characters of the current line so far
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            try:
                decoded = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = exc.object  # bytes held back from the last chunk, then this one
                before = bytes(data[: exc.start]).decode("utf-8")
                if "\n" in before:
                    line, col = line + before.count("\n"), len(before) - before.rfind("\n") - 1
                else:
                    col += len(before)
                return DataFileError(
                    f"{path.name} is not UTF-8: line {line}, column {col + 1}: byte {data[exc.start]:#04x} "
                    "(save the file as UTF-8)",
                    field="uri",
                )
            if "\n" in decoded:
                line, col = line + decoded.count("\n"), len(decoded) - decoded.rfind("\n") - 1
            else:
                col += len(decoded)
            done += len(chunk)
            if done > LOCATE_LIMIT:
                break
    return DataFileError(f"{path.name} is not UTF-8 (save the file as UTF-8)", field="uri")


def _malformed(path: Path, exc: csv.Error, line: int, record_start: int) -> DataFileError:
    """csv's error, with where the quoted value that never closed was opened when that is the cause."""
    message = str(exc)
    opened = _unclosed_quote(path, record_start) if "end of data" in message or "field larger" in message else None
    if opened is not None:
        q_line, q_col = opened
        return DataFileError(
            f"line {q_line}, column {q_col}: a quoted value opened here is never closed (malformed CSV: {message})",
            field="uri",
        )
    return DataFileError(f"line {line}: malformed CSV ({message})", field="uri")


def _unclosed_quote(path: Path, start_line: int) -> tuple[int, int] | None:
    """(line, column) of the quote still open at the end, reading CSV from `start_line` on, or None."""
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        line = 1
        while line < start_line:
            text = fh.readline()
            if not text:
                return None
            if text.endswith(("\n", "\r")):
                line += 1
        in_quote, field_start, opened, col, prev, read = False, True, None, 0, "", 0
        while chunk := fh.read(CHUNK):
            read += len(chunk)
            for ch in chunk:
                if prev == "\r" and ch != "\n" or prev == "\n":
                    line, col = line + 1, 0
                col += 1
                if in_quote:
                    if ch == '"':
                        in_quote = False  # closes, or the first of a doubled quote ("" reopens just below)
                        field_start = False
                elif ch == '"' and (field_start or prev == '"'):
                    in_quote = True
                    if prev != '"':
                        opened = (line, col)
                elif ch in ",\r\n":
                    field_start = True
                else:
                    field_start = False
                prev = ch
            if read > LOCATE_LIMIT:
                break
    return opened if in_quote else None


def inspect_parquet(
    path: Path, id_column: str, label_column: str | None, progress: Progress | None = None
) -> Inspection:
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = path.stat().st_size
    if size == 0:
        raise DataFileError(f"{path.name} is empty", field="uri")
    with path.open("rb") as fh:
        if fh.read(4) != b"PAR1":
            _sniff(path, expect="parquet")
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
            running = columns[name]
            for value in col.to_pylist():
                running.add("" if value is None else (value if isinstance(value, str) else repr(value)))
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
        row = 0
        for batch in pf.iter_batches(batch_size=65_536, columns=[id_column]):
            for v in batch.column(0).to_pylist():
                row += 1
                yield str(v), f"row {row}"

    dups = _find_duplicates(hashes, ids)
    if dups:
        raise _duplicates_error(id_column, dups)
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
