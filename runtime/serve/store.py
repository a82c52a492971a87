"""The indexed feature store a serving runtime reads rows from, by id.

Built once when serving starts: an SQLite file in the job's output folder with one
row per id (``id TEXT PRIMARY KEY``, ``WITHOUT ROWID``) holding that id's encoded
features (the model's input vector, or its bin codes for trees) as one blob. A
lookup is an indexed ``IN`` query: no table scan per request.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.errors import DataError

CHUNK = 500  # ids per query (SQLite's default limit of bound variables is 32766)


class FeatureStore:
    """Read-only id → feature row lookups over an SQLite file; one connection per thread."""

    def __init__(self, path: Path, dtype: str, width: int) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.width = width
        self._local = threading.local()
        with self._conn() as conn:
            (self.rows,) = conn.execute("SELECT count(*) FROM features").fetchone()

    @classmethod
    def build(cls, path: Path, ids: Sequence[str], matrix: np.ndarray) -> FeatureStore:
        """Write `matrix` (one row per id) into a fresh store at `path` (replacing any older file)."""
        matrix = np.ascontiguousarray(matrix)
        if matrix.ndim != 2 or len(ids) != matrix.shape[0]:
            raise DataError(f"serving store: {len(ids)} ids for a {matrix.shape} feature matrix")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("CREATE TABLE features (id TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
            conn.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("dtype", matrix.dtype.str), ("width", str(matrix.shape[1]))]
            )
            conn.executemany(
                "INSERT INTO features VALUES (?, ?)", ((str(i), matrix[r].tobytes()) for r, i in enumerate(ids))
            )
            conn.commit()
        finally:
            conn.close()
        tmp.replace(path)
        return cls(path, matrix.dtype.str, int(matrix.shape[1]))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.conn = conn
        return conn

    def get(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(known: bool per id, rows of the known ids in request order)."""
        conn = self._conn()
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), CHUNK):
            part = unique[start : start + CHUNK]
            marks = ",".join("?" * len(part))
            found.update(conn.execute(f"SELECT id, v FROM features WHERE id IN ({marks})", part).fetchall())  # noqa: S608 - only placeholders
        known = np.array([i in found for i in ids], dtype=bool)
        blob = b"".join(found[i] for i in ids if i in found)
        rows = np.frombuffer(blob, dtype=self.dtype).reshape(-1, self.width)
        return known, rows

    def explain(self, n: int = 2) -> str:
        """SQLite's plan for a lookup (tests check it searches the primary key, never scans)."""
        marks = ",".join("?" * n)
        plan = self._conn().execute(
            f"EXPLAIN QUERY PLAN SELECT id, v FROM features WHERE id IN ({marks})",  # noqa: S608
            [str(i) for i in range(n)],
        )
        return " | ".join(str(r[-1]) for r in plan.fetchall())
