"""Reading this side's table in batches, checking its ids, writing the aligned output.

CSV is read with the standard library's streaming reader, so every cell comes
back exactly as written (no type inference rewrites "007" as 7). Parquet is read
with pyarrow in record batches. Ids are compared as strings: integers as their
decimal form (so a CSV "42" matches a Parquet int64 42), text as its exact
Unicode code points (no normalisation, no trimming).

Outputs are written to a temporary file in the same folder and renamed, so a
killed run never leaves a complete-looking file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from runtime.errors import DataError

csv.field_size_limit(1 << 24)
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


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
        width = len(self.columns)
        line = 1
        try:
            with self.path.open(newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                next(reader, None)
                batch: list[list[str]] = []
                for row in reader:
                    line = reader.line_num
                    if len(row) != width:
                        if not row:
                            continue
                        raise DataError(
                            f"data.path: {self.path.name} line {line}: expected {width} fields, got {len(row)}"
                        )
                    batch.append(row)
                    if len(batch) >= batch_size:
                        yield batch
                        batch = []
                if batch:
                    yield batch
        except UnicodeDecodeError as exc:
            raise DataError(
                f"data.path: {self.path.name} near line {line + 1} is not valid UTF-8 ({exc.reason})"
            ) from None
        except csv.Error as exc:
            raise DataError(f"data.path: {self.path.name} line {line}: {exc}") from None

    def iter_ids(self, batch_size: int) -> Iterator[list[str]]:
        """Canonical ids in file order, in batches of exactly `batch_size` (the last may be shorter)."""
        k = self.id_index
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
        for rows in self.iter_rows(batch_size):
            out = []
            for r in rows:
                row_no += 1
                v = r[k]
                if v == "":
                    raise DataError(f"data.path: {self.path.name} row {row_no} (line {row_no + 1}): empty id")
                out.append(v)
            yield out


def has_rows(table: Table) -> bool:
    """Cheap emptiness check (the full count comes later, or from libpsi)."""
    if table.is_parquet:
        return table._parquet().metadata.num_rows > 0
    for _ in table.iter_rows(1):
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


IN_MEMORY_IDS = 4_000_000  # beyond this many ids, duplicate hashes go to disk in 256 buckets


def check_ids(table: Table, batch_size: int, spill_dir: Path | None = None) -> int:
    """Count the ids; raise DataError on empty input or on a duplicate id (naming it).

    Memory: 8 bytes per id up to IN_MEMORY_IDS, then per bucket (1/256 of that) from disk.
    """
    hashes: list[np.ndarray] = []
    spill: BucketSpill | None = None
    n = 0
    dups: list[np.ndarray] = []
    try:
        for ids in table.iter_ids(batch_size):
            h = np.fromiter(
                (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") for i in ids),
                dtype=np.uint64,
                count=len(ids),
            )
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
        wanted = set(int(x) for x in dup[:1000])
        seen: dict[str, int] = {}
        row = 0
        for ids in table.iter_ids(batch_size):
            for i in ids:
                row += 1
                if int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") in wanted:
                    if i in seen:
                        raise DataError(
                            f"data.id_column: duplicate id {i!r} in {table.path.name} (rows {seen[i]} and {row}); ids must be unique"
                        )
                    seen[i] = row
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


def write_aligned(table: Table, rows_in_order: np.ndarray, out: Path, batch_size: int) -> None:
    """Write the table's rows at positions `rows_in_order` (0-based), in that order, id column first."""
    wanted = np.sort(rows_in_order)
    picked: list[list[str]] = []
    pos = 0
    j = 0
    for rows in table.iter_rows(batch_size):
        end = pos + len(rows)
        while j < len(wanted) and wanted[j] < end:
            picked.append(rows[int(wanted[j]) - pos])
            j += 1
        pos = end
        if j >= len(wanted):
            break
    if j != len(wanted):
        raise DataError(f"data.path: {table.path.name} changed while PSI ran (fewer rows than before)")
    k = table.id_index
    # Rows ordered by id (UTF-8 byte order, like libpsi's `LC_ALL=C sort`): both sides hold the
    # same ids for the common rows, so both write them in the same order, whichever engine ran.
    picked.sort(key=lambda r: r[k].encode("utf-8"))
    order = [k] + [i for i in range(len(table.columns)) if i != k]
    with atomic_file(out, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([table.columns[i] for i in order])
        for r in picked:
            w.writerow([r[i] for i in order])
