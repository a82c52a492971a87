"""libpsi jobs keep to their own folders and ports: two jobs on the same dataset at once, held link ports,
libpsi's scratch files, and the rows picked from libpsi's output by their row numbers."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runtime.errors import DataError
from runtime.psi import libpsi_engine
from runtime.psi.data import Table
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
    # each id with its row number in the data file (libpsi's output carries it back)
    assert (work / "ids.csv").read_text(encoding="utf-8") == "psi_id,psi_row\nu2,0\nu1,1\n日本,2\n"
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


@needs_libpsi
@pytest.mark.timeout(120)
def test_libpsi_keeps_its_scratch_files_in_the_job_folder(tmp_path, pki, monkeypatch):
    """libpsi writes its buckets, sorted indices and a copy of the common ids to the temporary folder:
    never the machine's (shared, world-readable, and left behind when the worker is killed)."""
    machine_tmp = tmp_path / "machine-tmp"
    machine_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(machine_tmp))
    a = write_csv(tmp_path / "a.csv", ["id", "label"], [[f"u{i}", i % 2] for i in range(0, 3000, 2)])
    b = write_csv(tmp_path / "b.csv", ["uid", "f"], [[f"u{i}", i % 7] for i in range(2000)])
    port = free_port()
    psi = {"protocol": "rr22", "engine": "libpsi"}
    res = run_pair(
        make_cfg(tmp_path, pki, "leader", a, "id", port, psi), make_cfg(tmp_path, pki, "follower", b, "uid", port, psi)
    )
    assert all(not isinstance(r, Exception) and r["engine"] == "libpsi" for r in res.values()), res
    assert res["leader"]["intersection_size"] == 1000
    assert list(machine_tmp.iterdir()) == []
    # and the job's own copy went with the job's ids folder
    assert not list(tmp_path.rglob(".libpsi"))


@needs_libpsi
def test_libpsi_loads_without_spus_package_init():
    """The worker imports libpsi and the link alone: spu's package init imports JAX (0.35 s of CPU)."""
    code = (
        "import sys\n"
        "from runtime.psi.libpsi_engine import import_libpsi\n"
        "psi, link = import_libpsi()\n"
        "assert callable(psi.psi_execute) and callable(link.create_brpc)\n"
        "print(sorted(m for m in ('jax', 'spu.api', 'spu.experimental') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def _raw(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("psi_id,psi_row\n" + "".join(f"{i},{r}\n" for i, r in rows), encoding="utf-8")
    return path


def test_the_output_picks_rows_by_libpsis_row_numbers_and_orders_them_by_id(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["x", "id"], [["a", "u3"], ["b", "u1"], ["c", "u2"], ["d", "u0"]])
    table = Table(str(data), "id")
    full = table.read_table()
    dest = tmp_path / "aligned.csv"
    libpsi_engine._write_output(table, full, _raw(tmp_path / "raw.csv", [("u3", 0), ("u2", 2)]), dest, 2)
    assert dest.read_text(encoding="utf-8") == "id,x\nu2,c\nu3,a\n"
    # a data file that changed after its ids were handed to libpsi is named, and nothing is written
    for rows, expected in (([("u3", 1), ("u2", 2)], 2), ([("u3", 0), ("u2", 9)], 2), ([("u1", 0)], 1)):
        dest.unlink(missing_ok=True)
        with pytest.raises(DataError, match="d.csv changed while PSI ran"):
            libpsi_engine._write_output(table, full, _raw(tmp_path / "raw.csv", rows), dest, expected)
        assert not dest.exists()


@needs_libpsi
@pytest.mark.timeout(120)
def test_a_finished_libpsi_job_exits_at_once_and_cleanly(tmp_path, pki):
    """Both runtimes end right after their output (no teardown of brpc's and Arrow's native threads),
    with nothing on stderr that looks like a crash or a leak."""
    import json
    import os

    repo = Path(__file__).resolve().parents[2]
    a = write_csv(tmp_path / "a.csv", ["id", "label"], [[f"u{i}", i % 2] for i in range(0, 4000, 2)])
    b = write_csv(tmp_path / "b.csv", ["uid", "f"], [[f"u{i}", i % 7] for i in range(3000)])
    port = free_port()
    procs = {}
    for role, data, col in (("leader", a, "id"), ("follower", b, "uid")):
        path = tmp_path / f"{role}.json"
        path.write_text(json.dumps(make_cfg(tmp_path, pki, role, data, col, port, {"protocol": "rr22"})))
        procs[role] = subprocess.Popen(
            [sys.executable, "-m", "runtime", "psi", "--config", str(path)],
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
            stderr=subprocess.PIPE,
            text=True,
        )
    for role, p in procs.items():
        _, err = p.communicate(timeout=90)
        assert p.returncode == 0, err[-3000:]
        for bad in ("Traceback", "leaked", "terminate called", "Warning"):
            assert bad not in err, f"{role}: {bad!r} on stderr:\n{err[-3000:]}"
        assert (tmp_path / role / "psi" / "aligned.csv").read_text().count("\n") == 1501


@needs_libpsi
@pytest.mark.timeout(120)
def test_both_sides_must_agree_on_libpsis_bucket_size(tmp_path, pki):
    a = write_csv(tmp_path / "a.csv", ["id", "label"], [[f"u{i}", i % 2] for i in range(0, 400, 2)])
    b = write_csv(tmp_path / "b.csv", ["uid", "f"], [[f"u{i}", i % 7] for i in range(300)])
    port = free_port()
    res = run_pair(
        make_cfg(tmp_path, pki, "leader", a, "id", port, {"protocol": "rr22", "bucket_size": 2048}),
        make_cfg(tmp_path, pki, "follower", b, "uid", port, {"protocol": "rr22", "bucket_size": 4096}),
    )
    for role, mine, theirs in (("leader", 2048, 4096), ("follower", 4096, 2048)):
        assert isinstance(res[role], Exception), res
        assert f"psi.bucket_size differs: {mine} here, {theirs} at the partner" in str(res[role])
    # and with the same (small) bucket size the job runs, bucket by bucket
    res = run_pair(
        make_cfg(tmp_path, pki, "leader", a, "id", port, {"protocol": "rr22", "bucket_size": 1024}),
        make_cfg(tmp_path, pki, "follower", b, "uid", port, {"protocol": "rr22", "bucket_size": 1024}),
    )
    assert res["leader"]["intersection_size"] == res["follower"]["intersection_size"] == 150, res


_BARE_SIDE = """
import json, os, sys
from runtime.psi.libpsi_engine import import_libpsi
psi, link = import_libpsi()
rank, inp, out, p0, p1 = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
desc = link.Desc()
desc.id = "meta-test"
desc.add_party("a", "127.0.0.1:" + p0)
desc.add_party("b", "127.0.0.1:" + p1)
desc.connect_retry_interval_ms = 20
desc.connect_retry_times = 1000
ctx = link.create_brpc(desc, rank)
pconf = psi.PsiProtocolConfig(protocol=psi.PsiProtocol.PROTOCOL_RR22, receiver_rank=0, broadcast_result=True)
conf = psi.PsiExecuteConfig(
    protocol_conf=pconf,
    input_params=psi.InputParams(path=inp, selected_keys=["psi_id"], keys_unique=True),
    output_params=psi.OutputParams(path=out, disable_alignment=True),
    checkpoint_conf=psi.CheckpointConfig(enable=False),
)
print(json.dumps({"inter": psi.psi_execute(conf, ctx).intersection_count}), flush=True)
os._exit(0)
"""


@needs_libpsi
@pytest.mark.timeout(120)
def test_the_meta_file_is_the_one_libpsi_writes(tmp_path):
    """The runtime writes libpsi's <ids file>.meta itself (libpsi would re-read the whole file to make it):
    byte for byte the file libpsi writes for the same ids, so libpsi takes it as its own."""
    rows = [[f"user-{i:06d}", str(i % 3)] for i in range(1500)] + [["日本", "1"], ["x" * 40, "2"]]
    data = {}
    for side, keep in (("a", lambda i: i % 2 == 0), ("b", lambda i: i % 3 != 1)):
        d = write_csv(tmp_path / f"{side}.csv", ["id", "v"], [r for i, r in enumerate(rows) if keep(i)])
        ids = tmp_path / side / "ids.csv"
        ids.parent.mkdir()
        assert libpsi_engine._prepare_ids({"data": str(d), "id_column": "id", "input": str(ids)})["error"] == ""
        bare = tmp_path / side / "bare.csv"  # the same ids file, which libpsi has not seen
        bare.write_bytes(ids.read_bytes())
        data[side] = (ids, bare)
    for pick in (1, 0):  # libpsi on the files without a meta, then (it must take ours) on the others
        ports = [str(free_port()), str(free_port())]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BARE_SIDE,
                    str(rank),
                    str(data[side][pick]),
                    str(tmp_path / f"out-{side}.csv"),
                    *ports,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "TMPDIR": str(tmp_path)},
            )
            for rank, side in enumerate(("a", "b"))
        ]
        outs = [p.communicate(timeout=90)[0] for p in procs]
        assert all('"inter": ' in o for o in outs), outs
    for ids, bare in data.values():
        assert Path(str(ids) + ".meta").read_text() == Path(str(bare) + ".meta").read_text()


@pytest.mark.timeout(30)
def test_libpsis_log_becomes_stages_and_is_drained_when_stdout_is_gone(monkeypatch):
    """The runtime reads the worker's stdout (libpsi's log) for progress: it keeps reading even when its own
    stdout is closed (else libpsi would block on a full pipe), and picks out the phase lines."""
    import io
    import multiprocessing
    import queue

    class Gone(io.RawIOBase):
        def write(self, b):
            raise BrokenPipeError("stdout closed")

    class Out:
        buffer = Gone()

    monkeypatch.setattr(sys, "stdout", Out())
    r, w = multiprocessing.Pipe(duplex=False)
    lines = [
        "[2026-12-05 19:48:10.503] [info] [receiver.cc:53] [Rr22PsiReceiver::PreProcess] start",
        "[2026-12-05 19:48:11.651] [info] [receiver.cc:89] [Rr22PsiReceiver::Online] start",
        *["[2026-12-05 19:48:13.011] [info] [rr22_psi.cc:118] get intersection end"] * 3,
        "[2026-12-05 20:15:27.691] [info] [bucket.cc:62] run psi bucket_idx=0, bucket_item_size=25121",
        "[2026-12-05 19:48:13.563] [info] [receiver.cc:141] [Rr22PsiReceiver::Online] end",
        "x" * 200_000,  # more than a pipe holds, with nobody passing it on
        "[2026-12-05 19:48:13.854] [info] [key.cc:181] Finished sort scripts: tail -n +2 a.csv | sort -n",
        "[2026-12-05 19:48:14.567] [info] [interface.cc:189] [AbstractPsiParty::Finalize] end",
    ]
    events: queue.Queue = queue.Queue()
    pump = threading.Thread(target=libpsi_engine._pump_log, args=(r, events))
    pump.start()
    os.write(w.fileno(), ("\n".join(lines) + "\n").encode())  # blocks unless the pump keeps reading
    w.close()
    pump.join(10)
    assert not pump.is_alive()
    got = []
    while not events.empty():
        got.append(events.get()[1])
    assert got == ["preprocess", "online", "bucket", "bucket", "bucket", "bucket", "online_done", "sorted", "finalized"]
