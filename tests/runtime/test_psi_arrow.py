"""Issue 16: the Arrow job path (reading, checks, alignment, output) against an independent reference.

The reference is what the job path did before it read with Arrow: the standard library's CSV
reader, the common ids' rows ordered by the ids' UTF-8 bytes, own columns with the id first.
Every engine must give exactly those rows in exactly that order, and bad ids must still fail
both sides with a message naming the problem.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from runtime.errors import DataError, PeerError
from runtime.psi import data, libpsi_engine
from tests.pki import make_party
from tests.runtime.test_psi import free_port, make_cfg, read_csv, run_pair, write_csv

pytestmark = pytest.mark.runtime
needs_libpsi = pytest.mark.skipif(
    libpsi_engine.available() is not None, reason=f"libpsi unavailable: {libpsi_engine.available()}"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return {"alpha": make_party(d, "alpha"), "beta": make_party(d, "beta")}


def reference_aligned(path: Path, id_column: str, other_ids: set[str]) -> list[list[str]]:
    """The rows this side must write, computed with the standard library only."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]
    k = header.index(id_column)
    order = [k] + [i for i in range(len(header)) if i != k]
    picked = sorted((r for r in body if r[k] in other_ids), key=lambda r: r[k].encode("utf-8"))
    return [[header[i] for i in order]] + [[r[i] for i in order] for r in picked]


# Ids that sort differently by code point, by locale and by number; leading zeros; spaces; non-BMP.
PLAIN_IDS = ["007", "7", "10", "9", "a", "B", "b", "ä", "z", "日本", "x y", "-1", "1e3", "😀", "Ω", "a-b_c"]


def tables(tmp: Path, quoted: bool) -> tuple[Path, Path, set[str], set[str]]:
    extra = ["a,b", 'q"t', "two\nlines"] if quoted else []
    left = PLAIN_IDS[:12] + extra + [f"L{i:03d}" for i in range(40)] + [f"C{i:03d}" for i in range(60)]
    right = PLAIN_IDS[4:] + extra + [f"R{i:03d}" for i in range(30)] + [f"C{i:03d}" for i in range(60)][::-1]
    rng = np.random.default_rng(16)
    left = [left[i] for i in rng.permutation(len(left))]
    right = [right[i] for i in rng.permutation(len(right))]
    # The follower's id column is not the first, and cells keep exactly what was written.
    a = write_csv(tmp / "a.csv", ["id", "label", "note"], [[x, str(i % 2), f" n{i} "] for i, x in enumerate(left)])
    b = write_csv(tmp / "b.csv", ["f1", "uid", "f2"], [[f"0{i}", x, ""] for i, x in enumerate(right)])
    return a, b, set(left), set(right)


def run_engine(tmp: Path, pki, a: Path, b: Path, psi: dict) -> dict:
    port = free_port()
    return run_pair(
        make_cfg(tmp, pki, "leader", a, "id", port, psi), make_cfg(tmp, pki, "follower", b, "uid", port, psi)
    )


ENGINES = [
    pytest.param({"protocol": "ecdh", "engine": "builtin", "batch_size": 16}, False, id="builtin-ecdh"),
    pytest.param({"protocol": "rsa", "engine": "builtin", "rsa_bits": 1024, "batch_size": 16}, False, id="rsa"),
    pytest.param({"protocol": "ecdh", "engine": "builtin", "batch_size": 16}, True, id="builtin-ecdh-quoted"),
    pytest.param({"protocol": "rr22", "engine": "libpsi"}, False, id="libpsi-rr22", marks=needs_libpsi),
    pytest.param({"protocol": "kkrt", "engine": "libpsi"}, False, id="libpsi-kkrt", marks=needs_libpsi),
    pytest.param({"protocol": "ecdh", "engine": "libpsi"}, False, id="libpsi-ecdh", marks=needs_libpsi),
]


@pytest.mark.parametrize(("psi", "quoted"), ENGINES)
def test_every_engine_writes_exactly_the_reference_rows_in_order(tmp_path, pki, psi, quoted):
    a, b, left, right = tables(tmp_path, quoted)
    res = run_engine(tmp_path, pki, a, b, psi)
    assert not isinstance(res["leader"], Exception) and not isinstance(res["follower"], Exception), res
    assert res["leader"]["engine"] == psi["engine"] and res["leader"]["protocol"] == psi["protocol"]
    common = left & right
    assert res["leader"]["intersection_size"] == res["follower"]["intersection_size"] == len(common)
    lead = read_csv(tmp_path / "leader" / "psi" / "aligned.csv")
    foll = read_csv(tmp_path / "follower" / "psi" / "aligned.csv")
    assert lead == reference_aligned(a, "id", right)
    assert foll == reference_aligned(b, "uid", left)
    assert [r[0] for r in lead[1:]] == [r[0] for r in foll[1:]]  # same ids, same order on both sides
    assert not (tmp_path / "leader" / "psi" / ".libpsi").exists()


@pytest.mark.parametrize(
    ("engine", "bad_rows", "message"),
    [
        ("builtin", [["u1", "1"], ["u2", "2"], ["u1", "3"]], "duplicate id 'u1' in a.csv (rows 1 and 3)"),
        ("builtin", [["u1", "1"], ["", "2"]], "a.csv row 2 (line 3): empty id"),
        ("builtin", [["u1", "1"], ["u2", "2", "extra"]], "Expected 2 columns, got 3"),
        pytest.param(
            "libpsi",
            [["u1", "1"], ["u2", "2"], ["u1", "3"]],
            "duplicate id 'u1' in a.csv (rows 1 and 3)",
            marks=needs_libpsi,
        ),
        pytest.param("libpsi", [["u1", "1"], ["", "2"]], "a.csv row 2 (line 3): empty id", marks=needs_libpsi),
        pytest.param("libpsi", [["u1", "1"], ["u2", "2", "x"]], "Expected 2 columns, got 3", marks=needs_libpsi),
    ],
)
def test_bad_ids_fail_both_sides_naming_the_problem(tmp_path, pki, engine, bad_rows, message):
    a = tmp_path / "a.csv"
    a.write_text("id,label\n" + "\n".join(",".join(r) for r in bad_rows) + "\n", encoding="utf-8")
    b = write_csv(tmp_path / "b.csv", ["f1", "uid"], [["x", "u1"], ["y", "u2"]])
    psi = {"protocol": "ecdh" if engine == "builtin" else "rr22", "engine": engine}
    res = run_engine(tmp_path, pki, a, b, psi)
    assert isinstance(res["leader"], DataError) and message in str(res["leader"]), res
    assert isinstance(res["follower"], PeerError) and message in str(res["follower"]), res
    for role in ("leader", "follower"):
        assert not (tmp_path / role / "psi" / "aligned.csv").exists()
        assert not (tmp_path / role / "psi" / "stats.json").exists()


def test_spill_path_gives_the_same_output_as_in_memory(tmp_path, pki, monkeypatch):
    """A tiny spill threshold sends the duplicate check and the join to disk: byte-identical output."""
    from runtime.psi import common

    a, b, _, _ = tables(tmp_path, quoted=True)
    psi = {"protocol": "ecdh", "engine": "builtin", "batch_size": 8}
    mem = run_engine(tmp_path / "mem", pki, a, b, psi)
    assert not isinstance(mem["leader"], Exception), mem
    spilled: list[Path] = []
    real_spill = data.BucketSpill

    class Recording(real_spill):  # type: ignore[misc, valid-type]
        def __init__(self, folder: Path, bits: int) -> None:
            spilled.append(folder)
            super().__init__(folder, bits)

    monkeypatch.setattr(data, "BucketSpill", Recording)
    monkeypatch.setattr(common, "BucketSpill", Recording)
    monkeypatch.setattr(data, "IN_MEMORY_IDS", 10)
    monkeypatch.setattr(common, "IN_MEMORY_VALUES", 20)
    disk = run_engine(tmp_path / "disk", pki, a, b, psi)
    assert not isinstance(disk["leader"], Exception), disk
    assert spilled, "the spill path did not run"
    for role in ("leader", "follower"):
        mem_out = (tmp_path / "mem" / role / "psi" / "aligned.csv").read_bytes()
        assert (tmp_path / "disk" / role / "psi" / "aligned.csv").read_bytes() == mem_out
    assert not any(p.exists() for p in spilled)  # spill files removed


def test_hash_collisions_are_confirmed_exactly(tmp_path, monkeypatch):
    """The vectorised duplicate checks group by a 64-bit hash; equal hashes of different ids are not duplicates."""
    f = write_csv(tmp_path / "c.csv", ["id"], [[x] for x in ["p", "q", "r", "s"]])
    table = data.Table(str(f), "id")
    monkeypatch.setattr(data, "hash64", lambda ids: np.zeros(len(ids), dtype=np.uint64))
    assert data.check_ids(table, 2) == 4
    data.find_duplicate(table.read_ids(), "c.csv")  # no error
    g = write_csv(tmp_path / "d.csv", ["id"], [[x] for x in ["p", "q", "p"]])
    with pytest.raises(DataError, match=r"duplicate id 'p' in d.csv \(rows 1 and 3\)"):
        data.find_duplicate(data.Table(str(g), "id").read_ids(), "d.csv")
    with pytest.raises(DataError, match=r"duplicate id 'p' in d.csv \(rows 1 and 3\)"):
        data.check_ids(data.Table(str(g), "id"), 2)


def test_hash64_is_stable_and_separates_ids():
    ids = pa.array(["a", "b", "ab", "ba", "日本", "a" * 300, "a" * 301] * 2)
    h = data.hash64(ids)
    assert len(set(h[:7].tolist())) == 7
    assert (h[:7] == h[7:]).all()
    assert (data.hash64(ids.slice(7)) == h[7:]).all()  # sliced arrays hash the same


def test_hash64_of_ids_of_one_length_equals_the_general_path():
    """One-length ids take a faster path; a batch mixing lengths takes the general one: same hashes."""
    same = pa.array([f"user-{i:09d}" for i in range(1000)])
    mixed = pa.concat_arrays([pa.array(["x"]), same])
    assert (data.hash64(mixed)[1:] == data.hash64(same)).all()


@pytest.mark.parametrize("width", [1, 7, 8, 9, 16, 17, 40])
def test_bytewise_sort_matches_utf8_byte_order(width):
    rng = np.random.default_rng(width)
    alphabet = ["a", "b", "\x00", "ü", "日", "~", "\x7f", "z"]
    for _ in range(50):
        vals = ["".join(rng.choice(alphabet, size=width)) for _ in range(rng.integers(0, 60))]
        if vals and rng.random() < 0.3:
            vals[0] = vals[0][:-1] or "q"  # one shorter id: Arrow's sort
        order = data.sort_indices_bytewise(pa.chunked_array([pa.array(vals, pa.string())])).to_numpy()
        assert [vals[i].encode() for i in order] == sorted(v.encode() for v in vals)


@pytest.mark.parametrize("width", [3, 14, 20])
def test_bytewise_sort_is_arrows_stable_order_with_shared_bytes_and_repeats(width):
    """Bytes common to every id are skipped and ties on the first word resorted: the order is exactly Arrow's."""
    rng = np.random.default_rng(width)
    for _ in range(30):
        n = int(rng.integers(2, 400))
        tails = rng.integers(0, 40, size=n)  # few values: repeats and ties on the first packed word
        vals = [f"{'user-' if width > 5 else ''}{t:0{width - (5 if width > 5 else 0)}d}" for t in tails]
        arr = pa.array(vals, pa.string())
        got = data.sort_indices_bytewise(arr).to_pylist()
        assert got == pc.sort_indices(arr).to_pylist()


def test_hash64_words_agree_with_the_byte_path_at_every_length():
    """The one-length path sums 64-bit words, the general path bytes: the same hash for every length."""
    for width in range(1, 35):
        same = pa.array(["".join(chr(33 + (i * 7 + j * 13) % 90) for j in range(width)) for i in range(50)])
        mixed = pa.concat_arrays([pa.array(["q" * (width + 3)]), same])
        assert (data.hash64(mixed)[1:] == data.hash64(same)).all(), width
