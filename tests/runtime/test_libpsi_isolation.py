"""libpsi jobs keep to their own folders and ports: two jobs on the same dataset at once, held link ports."""

from __future__ import annotations

import errno
import socket
import threading

import pytest

from runtime.psi import libpsi_engine
from tests.pki import make_party
from tests.runtime.test_psi import aligned_ids, free_port, make_cfg, run_pair, write_csv

pytestmark = pytest.mark.runtime
needs_libpsi = pytest.mark.skipif(
    libpsi_engine.available() is not None, reason=f"libpsi unavailable: {libpsi_engine.available()}"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return {"alpha": make_party(d, "alpha"), "beta": make_party(d, "beta")}


@needs_libpsi
@pytest.mark.timeout(180)
def test_two_psi_jobs_on_the_same_datasets_at_once(tmp_path, pki):
    # given one data root holding both sides' datasets
    root = tmp_path / "data"
    root.mkdir()
    a = write_csv(root / "labels.csv", ["id", "label"], [[f"u{i}", i % 2] for i in range(0, 6000, 2)])
    b = write_csv(root / "features.csv", ["uid", "age"], [[f"u{i}", i % 70] for i in range(4000)])
    results: dict[str, dict] = {}
    seen: set[str] = set()
    running = True

    def watch() -> None:  # libpsi removes its temporary files at the end: look while it runs
        while running:
            seen.update(p.name for p in root.iterdir())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def job(name: str) -> None:
        port = free_port()
        tmp = tmp_path / name
        results[name] = run_pair(
            make_cfg(tmp, pki, "leader", a, "id", port, {"protocol": "rr22", "engine": "libpsi"}),
            make_cfg(tmp, pki, "follower", b, "uid", port, {"protocol": "rr22", "engine": "libpsi"}),
        )

    # when two jobs run libpsi on them at the same time
    threads = [threading.Thread(target=job, args=(f"job{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    running = False
    watcher.join()
    # then both succeed with the right intersection, and nothing was written into the data root
    expected = sorted(f"u{i}" for i in range(0, 4000, 2))
    for name in ("job0", "job1"):
        for role in ("leader", "follower"):
            res = results[name][role]
            assert not isinstance(res, Exception), results
            assert res["engine"] == "libpsi" and res["intersection_size"] == len(expected)
        assert sorted(aligned_ids(tmp_path / name, "leader")) == expected
    assert sorted(seen) == ["features.csv", "labels.csv"]


def test_a_held_link_port_is_not_handed_to_anyone_else_but_the_link_can_listen_on_it():
    hold = libpsi_engine.PortHold("127.0.0.1")
    try:
        # another program binding it (without SO_REUSEADDR) is refused
        with socket.socket() as other, pytest.raises(OSError) as err:
            other.bind(("127.0.0.1", hold.port))
        assert err.value.errno == errno.EADDRINUSE
        # the kernel does not hand it out as a free port either
        for _ in range(50):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                assert s.getsockname()[1] != hold.port
        # libpsi's link (brpc binds with SO_REUSEADDR) can still listen on it
        with socket.socket() as link:
            link.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            link.bind(("127.0.0.1", hold.port))
            link.listen()
    finally:
        hold.release()


def test_libpsi_reads_only_an_ids_file_in_the_job_folder(tmp_path):
    """The worker hands libpsi a one-column file of checked ids inside the job folder, never the data file."""
    data = write_csv(tmp_path / "d.csv", ["x", "id"], [["a", "u2"], ["b", "u1"], ["c", "日本"]])
    work = tmp_path / "job" / "psi" / ".libpsi"
    work.mkdir(parents=True)
    spec = {"data": str(data), "id_column": "id", "input": str(work / "ids.csv")}
    assert libpsi_engine._prepare_ids(spec) == {"n": 3, "error": "", "input": str(work / "ids.csv")}
    assert (work / "ids.csv").read_text(encoding="utf-8") == f"{libpsi_engine.IDS_HEADER}\nu2\nu1\n日本\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "job"]
    # bad ids are named, and no ids file is offered to libpsi
    for rows, message in (
        ([["a", "u1"], ["b", "u2"], ["c", "u1"]], "duplicate id 'u1' in bad.csv (rows 1 and 3)"),
        ([["a", "u1"], ["b", ""]], "bad.csv row 2 (line 3): empty id"),
        ([], "bad.csv has no rows"),
    ):
        bad = write_csv(tmp_path / "bad.csv", ["x", "id"], rows)
        out = work / "bad-ids.csv"
        res = libpsi_engine._prepare_ids({"data": str(bad), "id_column": "id", "input": str(out)})
        assert res["n"] == 0 and message in res["error"], res
        assert not out.exists()
