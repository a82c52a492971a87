"""Reading this side's table in batches, checking its ids, writing the aligned output.

CSV is read with pyarrow's CSV reader (multi-threaded, streaming in blocks) with
every column typed as a string, so every cell comes back exactly as written (no
type inference rewrites "007" as 7, an empty cell stays ""). Parquet is read
with pyarrow in record batches. Ids are compared as strings: integers as their
decimal form (so a CSV "42" matches a Parquet int64 42), text as its exact
Unicode code points (no normalisation, no trimming).

Outputs are written to a temporary file in the same folder and renamed, so a
killed run never leaves a complete-looking file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from runtime.config import PARQUET_SUFFIXES
from runtime.errors import DataError

csv.field_size_limit(1 << 24)


def _canonical(value: Any, where: str) -> str:
    if value is None:
        raise DataError(f"{where}: empty id")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise DataError(f"{where}: id is not a number ({value})")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{where}: id is not valid UTF-8") from None
    text = str(value)
    if text == "":
        raise DataError(f"{where}: empty id")
    return text


class Table:
    """One side's input table: a CSV or Parquet file with an id column."""

    def __init__(self, path: str, id_column: str) -> None:
        self.path = Path(path)
        self.id_column = id_column
        if not self.path.is_file():
            raise DataError(f"data.path: no such file {self.path}")
        self.is_parquet = self.path.suffix.lower() in PARQUET_SUFFIXES
        self._plain: bool | None = None
        self.columns = self._read_columns()
        if id_column not in self.columns:
            raise DataError(
                f"data.id_column: column {id_column!r} is not in {self.path.name} (columns: {', '.join(self.columns) or 'none'})"
            )
        self.id_index = self.columns.index(id_column)
        if self.columns.count(id_column) > 1:
            raise DataError(f"data.id_column: column {id_column!r} appears more than once in the header")

    def fingerprint(self) -> dict[str, Any]:
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    # -- reading ------------------------------------------------------------
    def _parquet(self):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError(
                f"data.path: reading Parquet needs pyarrow, which cannot be imported here ({exc})"
            ) from None
        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise DataError(f"data.path: {self.path.name} is not a readable Parquet file ({exc})") from None

    def _read_columns(self) -> list[str]:
        if self.is_parquet:
            return list(self._parquet().schema_arrow.names)
        try:
            with self.path.open(newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
        except UnicodeDecodeError as exc:
            raise DataError(f"data.path: {self.path.name} line 1 is not valid UTF-8 ({exc.reason})") from None
        if not header:
            raise DataError(f"data.path: {self.path.name} is empty (no header line)")
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        return header

    # -- CSV through Arrow ------------------------------------------------------
    @property
    def plain(self) -> bool:
        """CSV without quotes or CRs: fields never contain a comma, quote or line break (libpsi can read it)."""
        if self._plain is None:
            self._plain = not self.is_parquet and csv_is_plain(str(self.path))
        return self._plain

    def _csv_options(
        self, columns: list[str] | None, block_size: int | None = None
    ) -> tuple[pcsv.ReadOptions, pcsv.ParseOptions, pcsv.ConvertOptions]:
        # Columns by position (c0, c1, ...): the header was read already, and names may repeat.
        generic = [f"c{i}" for i in range(len(self.columns))]
        wanted = generic if columns is None else [generic[self.columns.index(c)] for c in columns]
        read = pcsv.ReadOptions(
            use_threads=True, column_names=generic, skip_rows=1, **({"block_size": block_size} if block_size else {})
        )
        # Quoted fields may hold line breaks (the standard library's reader allows them too).
        parse = pcsv.ParseOptions(newlines_in_values=not self.plain)
        convert = pcsv.ConvertOptions(
            column_types={c: pa.string() for c in wanted},
            include_columns=wanted,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            null_values=[],
        )
        return read, parse, convert

    def _arrow_error(self, exc: Exception) -> DataError:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if "UTF8" in msg or "UTF-8" in msg:
            return DataError(f"data.path: {self.path.name} is not valid UTF-8 ({msg})")
        return DataError(f"data.path: {self.path.name}: {msg}")

    def _csv_blocks(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        """Record batches of the CSV (all cells strings), streaming block by block."""
        read, parse, convert = self._csv_options(columns, 1 << 22)
        try:
            with pcsv.open_csv(self.path, read_options=read, parse_options=parse, convert_options=convert) as rd:
                for rb in rd:
                    if rb.num_rows:
                        yield rb
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
            raise self._arrow_error(exc) from None

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """The whole table (or some columns) as strings, exactly as written."""
        if self.is_parquet:
            cols = columns if columns is not None else self.columns
            idx = [self.columns.index(c) for c in cols]
            data: list[list[str]] = [[] for _ in cols]
            for rows in self.iter_rows(65536):
                for r in rows:
                    for j, i in enumerate(idx):
                        data[j].append(r[i])
            return pa.table({c: pa.array(d, pa.string()) for c, d in zip(cols, data, strict=True)})
        read, parse, convert = self._csv_options(columns)
        try:
            return pcsv.read_csv(self.path, read_options=read, parse_options=parse, convert_options=convert)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
            raise self._arrow_error(exc) from None

    def read_ids(self) -> pa.ChunkedArray:
        """All canonical ids, in file order (Arrow strings); empty ids raise DataError."""
        if self.is_parquet:
            return pa.chunked_array([pa.array(b, pa.string()) for b in self.iter_ids(1 << 20)], pa.string())
        ids = self.read_table([self.id_column]).column(0)
        check_not_empty(ids, self.path.name, 0)
        return ids

    def iter_id_arrays(self) -> Iterator[pa.Array]:
        """Canonical ids in file order, in blocks of any size (Arrow strings); empty ids raise DataError."""
        if self.is_parquet:
            for b in self.iter_ids(1 << 16):
                yield pa.array(b, pa.string())
            return
        row0 = 0
        for rb in self._csv_blocks([self.id_column]):
            col = rb.column(0)
            check_not_empty(col, self.path.name, row0)
            row0 += len(col)
            yield col

    def iter_rows(self, batch_size: int) -> Iterator[list[list[str]]]:
        """Rows in file order, all cells as strings, in batches."""
        if self.is_parquet:
            pf = self._parquet()
            for rb in pf.iter_batches(batch_size=batch_size):
                cols = [rb.column(i).to_pylist() for i in range(rb.num_columns)]
                rows = []
                for r in zip(*cols, strict=True):
                    rows.append(
                        ["" if v is None else (_canonical(v, "cell") if not isinstance(v, str) else v) for v in r]
                    )
                yield rows
            return
        for rb in self._csv_blocks(None):
            cols = [rb.column(i).to_pylist() for i in range(rb.num_columns)]
            rows = [list(r) for r in zip(*cols, strict=True)]
            for i in range(0, len(rows), batch_size):
                yield rows[i : i + batch_size]

    def iter_ids(self, batch_size: int) -> Iterator[list[str]]:
        """Canonical ids in file order, in batches of exactly `batch_size` (the last may be shorter)."""
        row_no = 0
        if self.is_parquet:
            pf = self._parquet()
            buf: list[str] = []
            for rb in pf.iter_batches(batch_size=batch_size, columns=[self.id_column]):
                for v in rb.column(0).to_pylist():
                    row_no += 1
                    buf.append(_canonical(v, f"data.path: {self.path.name} row {row_no}"))
                while len(buf) >= batch_size:
                    yield buf[:batch_size]
                    buf = buf[batch_size:]
            if buf:
                yield buf
            return
        pending: list[str] = []
        for arr in self.iter_id_arrays():
            values = arr.to_pylist()
            start = 0
            if pending:
                start = batch_size - len(pending)
                pending.extend(values[:start])
                if len(pending) < batch_size:
                    continue
                yield pending
                pending = []
            while start + batch_size <= len(values):
                yield values[start : start + batch_size]
                start += batch_size
            pending = values[start:]
        if pending:
            yield pending


def csv_is_plain(path: str) -> bool:
    """No quoted fields and no CRs: lines split on commas give the fields (what libpsi's reader needs)."""
    import mmap

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return True
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return m.find(b'"') < 0 and m.find(b"\r") < 0
    except OSError:
        return False


def check_not_empty(ids: pa.Array | pa.ChunkedArray, name: str, row0: int) -> None:
    """Raise DataError naming the first empty id (rows counted from 1 after `row0` rows)."""
    empty = pc.equal(pc.binary_length(ids), 0)
    if pc.any(empty).as_py():
        first = int(pc.index(empty, True).as_py())
        row = row0 + first + 1
        raise DataError(f"data.path: {name} row {row} (line {row + 1}): empty id")


def find_duplicate(ids: pa.Array | pa.ChunkedArray, name: str) -> None:
    """Raise DataError naming a duplicate id and two of its rows, if there is one.

    Sorts 64-bit hashes of the ids (about twice as fast as Arrow's hash-table count) and
    checks only the ids whose hashes repeat exactly.
    """
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    h = hash64(arr)
    srt = np.sort(h)
    same = srt[1:] == srt[:-1]
    if not same.any():
        return
    suspect = np.flatnonzero(np.isin(h, np.unique(srt[1:][same])))
    sub = arr.take(pa.array(suspect))
    counts = pc.value_counts(sub)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if not len(repeated):
        return  # only hash collisions
    dup = repeated[0]["values"].as_py()
    rows = suspect[np.flatnonzero(pc.equal(sub, dup).to_numpy(zero_copy_only=False))][:2].tolist()
    raise DataError(
        f"data.id_column: duplicate id {dup!r} in {name} (rows {rows[0] + 1} and {rows[1] + 1}); ids must be unique"
    )


def has_rows(table: Table) -> bool:
    """Cheap emptiness check (the full count comes later, or from libpsi)."""
    if table.is_parquet:
        return table._parquet().metadata.num_rows > 0
    with table.path.open("rb") as f:
        f.readline()  # the header
        for line in f:
            if line.strip(b"\r\n"):
                return True
    return False


class BucketSpill:
    """Fixed-width records spread over 2^bits files by a bucket number, to work on one bucket at a time."""

    def __init__(self, folder: Path, bits: int) -> None:
        self.folder = folder
        self.count = 1 << bits
        folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[int, Any] = {}

    def add(self, buckets: np.ndarray, records: np.ndarray) -> None:
        order = np.argsort(buckets, kind="stable")
        sorted_b = buckets[order]
        recs = records[order]
        edges = np.searchsorted(sorted_b, np.arange(self.count + 1))
        for b in range(self.count):
            lo, hi = edges[b], edges[b + 1]
            if hi > lo:
                f = self._files.get(b)
                if f is None:
                    f = self._files[b] = (self.folder / f"{b:03d}.bin").open("ab")
                f.write(recs[lo:hi].tobytes())

    def read(self, bucket: int) -> bytes:
        f = self._files.get(bucket)
        if f is None:
            return b""
        f.flush()
        return (self.folder / f"{bucket:03d}.bin").read_bytes()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        for p in self.folder.glob("*.bin"):
            p.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass


_MUL = np.uint64(0x9E3779B97F4A7C15)
_BYTE_MULS = np.ones(0, dtype=np.uint64)


def _byte_muls(n: int) -> np.ndarray:
    """Byte i's multiplier: P_(i // 8) << 8 * (i % 8), P_k = _MUL^(k+1) (odd).

    Summing bytes times these equals summing the ids' little-endian 64-bit words times P_k:
    the one-length path does the latter (a few multiplies per id, not one per byte).
    """
    global _BYTE_MULS
    if len(_BYTE_MULS) < n:
        m = max(n, 2 * len(_BYTE_MULS), 64)
        m = -(-m // 8) * 8
        p = np.empty(m // 8, dtype=np.uint64)
        with np.errstate(over="ignore"):
            acc = np.uint64(1)
            for k in range(len(p)):
                acc = acc * _MUL
                p[k] = acc
            shifts = (np.arange(8, dtype=np.uint64) * np.uint64(8))[None, :]
            _BYTE_MULS = (p[:, None] << shifts).reshape(-1)
    return _BYTE_MULS


def _fixed_width_matrix(data: np.ndarray, n: int, width: int) -> np.ndarray:
    """`n` ids of `width` bytes each, zero-padded to whole 64-bit words: an (n, words * 8) uint8 matrix."""
    words = -(-width // 8)
    mat = np.zeros((n, words * 8), dtype=np.uint8)
    mat[:, :width] = data.reshape(n, width)
    return mat


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (int64, one more than its length) and its UTF-8 bytes, without a copy.

    The bytes of element i are ``data[off[i] : off[i + 1]]``; those of the whole array, one after
    the other, ``data[off[0] : off[-1]]``. Arrays of another type are cast to strings first.
    """
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    off = np.frombuffer(bufs[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64, copy=False)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return off, data


def hash64(ids: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string (its UTF-8 bytes), vectorised: for grouping and candidates only.

    Equal ids always hash equal; a collision of different ids is possible, so callers confirm
    exactly. The sum of the id's 64-bit words times fixed odd constants mod 2^64, the length
    mixed in, then splitmix64's finaliser.
    """
    if not isinstance(ids, pa.Array):
        ids = ids.combine_chunks()
    n = len(ids)
    out = np.empty(n, dtype=np.uint64)
    offsets, data = string_buffers(ids)
    step = 1 << 18
    with np.errstate(over="ignore"):
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            off = offsets[lo : hi + 1]
            base = int(off[0])
            lens = np.diff(off)
            width = int(lens[0]) if len(lens) else 0
            if width and (lens == width).all():
                # Ids of one length (the usual case): whole words, a multiply per 8 bytes.
                words = _fixed_width_matrix(data[base : int(off[-1])], hi - lo, width).view("<u8")
                muls = _byte_muls(words.shape[1] * 8)[::8]
                h = words[:, 0] * muls[0]
                for k in range(1, words.shape[1]):
                    h += words[:, k] * muls[k]
            elif off[-1] > base:
                d = data[base : int(off[-1])].astype(np.uint64)
                pos = np.arange(len(d), dtype=np.int64) - np.repeat(off[:-1] - base, lens)
                d *= _byte_muls(int(lens.max()))[pos]
                starts = np.minimum(off[:-1] - base, len(d) - 1)
                h = np.add.reduceat(d, starts)
                h[lens == 0] = 0
            else:
                h = np.zeros(hi - lo, dtype=np.uint64)
            h ^= lens.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
            out[lo:hi] = h
    return out


IN_MEMORY_IDS = 4_000_000  # beyond this many ids, duplicate hashes go to disk in 256 buckets


def check_ids(table: Table, batch_size: int, spill_dir: Path | None = None) -> int:
    """Count the ids; raise DataError on empty input or on a duplicate id (naming it).

    Memory: 8 bytes per id up to IN_MEMORY_IDS, then per bucket (1/256 of that) from disk.
    `batch_size` is kept for callers; ids are read in Arrow blocks.
    """
    del batch_size
    hashes: list[np.ndarray] = []
    spill: BucketSpill | None = None
    n = 0
    dups: list[np.ndarray] = []
    try:
        for ids in table.iter_id_arrays():
            h = hash64(ids)
            n += len(ids)
            if spill is None:
                hashes.append(h)
                if n > IN_MEMORY_IDS and spill_dir is not None:
                    spill = BucketSpill(spill_dir, 8)
                    for part in hashes:
                        spill.add((part >> np.uint64(56)).astype(np.int64), part)
                    hashes = []
            else:
                spill.add((h >> np.uint64(56)).astype(np.int64), h)
        if n == 0:
            raise DataError(f"data.path: {table.path.name} has no rows")
        parts = (
            [np.concatenate(hashes)]
            if spill is None
            else (np.frombuffer(spill.read(b), dtype=np.uint64) for b in range(256))
        )
        for part in parts:
            srt = np.sort(part)
            dups.append(np.unique(srt[1:][srt[1:] == srt[:-1]]))
    finally:
        if spill is not None:
            spill.close()
    dup = np.concatenate(dups) if dups else np.zeros(0, dtype=np.uint64)
    if dup.size:
        wanted = np.sort(dup[:1000])
        seen: dict[str, int] = {}
        row = 0
        for ids in table.iter_id_arrays():
            hit = np.flatnonzero(np.isin(hash64(ids), wanted))
            for k in hit.tolist():
                i = ids[k].as_py()
                if i in seen:
                    raise DataError(
                        f"data.id_column: duplicate id {i!r} in {table.path.name} (rows {seen[i]} and {row + k + 1}); ids must be unique"
                    )
                seen[i] = row + k + 1
            row += len(ids)
    return n


# -- output -------------------------------------------------------------------------


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file that appears at `path` whole (written to a temporary name, synced, renamed) or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text: dict[str, Any] = {} if "b" in mode else {"newline": "", "encoding": "utf-8"}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_aligned(table: Table, rows_in_order: np.ndarray, out: Path, batch_size: int = 0) -> None:
    """Write the table's rows at positions `rows_in_order` (0-based data rows), ordered by id, id column first."""
    full = table.read_table()
    rows = np.asarray(rows_in_order, dtype=np.int64)
    if len(rows) and int(rows.max()) >= full.num_rows:
        raise DataError(f"data.path: {table.path.name} changed while PSI ran (fewer rows than before)")
    write_rows(table, full.take(pa.array(rows)), out)


def sort_indices_bytewise(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Indices that order `ids` by their UTF-8 bytes (Arrow's string order), stable like Arrow's sort.

    Ids of one length (the usual case) are compared by the bytes that differ between them (a
    byte the same in every id cannot change the order), packed into big-endian 64-bit words:
    one numpy argsort when they fit in one word (5x faster than Arrow's string sort), ties on
    the first word settled by a lexsort of only the tied ids. Other ids go to Arrow's sort.
    """
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(arr)
    if n < 2 or arr.null_count:
        return pc.sort_indices(arr)
    off, data = string_buffers(arr)
    lens = np.diff(off)
    width = int(lens[0])
    if width == 0 or width > 64 or not (lens == width).all():
        return pc.sort_indices(arr)
    mat = data[int(off[0]) : int(off[-1])].reshape(n, width)
    varying = np.flatnonzero((mat != mat[0]).any(axis=0))
    if len(varying) == 0:
        return pa.array(np.arange(n, dtype=np.int64))  # all equal: the input order is the stable order
    if len(varying) < width:
        mat = np.ascontiguousarray(mat[:, varying])
    keys = _fixed_width_matrix(mat, n, mat.shape[1]).view(">u8").astype(np.uint64)
    order = np.argsort(keys[:, 0])
    first = keys[order, 0]
    tied = np.zeros(n, dtype=bool)
    same = first[1:] == first[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    if tied.any():
        # The tied ids sit in runs of equal first words; sorting them all by the full key (first
        # word first, then the row for stability) and putting them back where they were keeps every run.
        at = np.flatnonzero(tied)
        rows = order[at]
        sub = keys[rows]
        order[at] = rows[np.lexsort((rows, *sub.T[::-1]))]
    return pa.array(order.astype(np.int64, copy=False), type=pa.int64())


def write_rows(table: Table, picked: pa.Table, out: Path) -> None:
    """Write `picked` (rows of `table`, all columns as strings) ordered by id, id column first, atomically.

    Rows are ordered by id in UTF-8 byte order (like libpsi's `LC_ALL=C sort`): both sides hold
    the same ids for the common rows, so both write them in the same order, whichever engine ran.
    """
    k = table.id_index
    picked = picked.take(sort_indices_bytewise(picked.column(k)))
    order = [k] + [i for i in range(len(table.columns)) if i != k]
    picked = picked.select(order)
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([table.columns[i] for i in order])
    # A plain CSV has no comma, quote or line break in any cell: no quoting needed (as before).
    quoting = "none" if table.plain else "needed"
    with atomic_file(out, "wb") as f:
        f.write(header.getvalue().encode("utf-8"))
        if picked.num_rows:
            pcsv.write_csv(picked, f, pcsv.WriteOptions(include_header=False, quoting_style=quoting))
