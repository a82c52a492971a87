"""Bad input gets a clear 4xx naming the problem, never a 500; API errors are JSON (issue 12, items 6-8)."""

from __future__ import annotations

import gzip
import re
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from apps.datasets.inspect import DataFileError, inspect_csv, inspect_csv_rows
from apps.datasets.models import Dataset
from apps.datasets.services import register_dataset
from apps.tickets.choices import JobKind, TicketStatus
from apps.tickets.services import receive_proposal
from apps.workspaces.models import Workspace
from tests.foundation.factories import connected_partner, shared_dataset

pytestmark = pytest.mark.django_db
URL = "/api/v1/workspaces/acme/datasets/"
FORM = "/w/acme/datasets/new"


def register(api, **body):
    return api("dave").post(URL, {"id_column": "id", **body}, format="json")


def dashboard(users) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(users["dave"])
    return client


# -- item 6: paths the filesystem refuses -------------------------------------------------------------


def _long_name(data_root: Path) -> str:
    return str(data_root / ("x" * 300 + ".csv"))  # NAME_MAX is 255 on every common filesystem


def _loop(data_root: Path) -> str:
    (data_root / "a").symlink_to(data_root / "b")
    (data_root / "b").symlink_to(data_root / "a")
    return str(data_root / "a" / "t.csv")


@pytest.mark.parametrize(("make", "message"), [(_long_name, "too long"), (_loop, "symlink loop")])
def test_a_path_the_filesystem_refuses_is_a_400_on_the_api_and_the_dashboard(api, users, data_root, make, message):
    uri = make(data_root)
    r = register(api, name="bad", uri=uri)
    assert r.status_code == 400 and message in r.json()["uri"][0].lower(), r.content
    page = dashboard(users).post(FORM, {"name": "bad", "uri": uri, "id_column": "id", "visibility": "schema"})
    assert page.status_code == 400 and message in page.content.decode().lower()
    assert dashboard(users).get(FORM).status_code == 200  # the form's file list walks past the loop
    assert not Dataset.objects.exists()


def test_a_nul_byte_in_a_column_name_is_refused_with_its_place(api, data_root):
    """PostgreSQL cannot store it in the JSON schema: refused before, on both readers."""
    (data_root / "nul.csv").write_bytes(b"id,a\x00b\n1,2\n")
    r = register(api, name="nul", uri=str(data_root / "nul.csv"))
    assert r.status_code == 400, r.content
    assert "line 1, field 2: the column name contains a NUL byte" in r.json()["uri"][0]
    assert not Dataset.objects.exists()


# -- item 6: JSON on /api/, whatever goes wrong -------------------------------------------------------


def test_api_errors_outside_drf_are_json(api, users, monkeypatch):
    client = Client(raise_request_exception=False)
    client.force_login(users["dave"])
    r = client.get("/api/v1/no-such-thing/")
    assert r.status_code == 404 and r["Content-Type"] == "application/json" and r.json()["code"] == "not_found"

    def boom(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("apps.datasets.api.views.register_dataset", boom)
    r = client.post(URL, {"name": "x", "uri": "x.csv", "id_column": "id"}, content_type="application/json")
    assert r.status_code == 500 and r["Content-Type"] == "application/json"
    assert r.json() == {"detail": "internal error; it has been logged for the operator", "code": "internal_error"}
    assert "a bug" not in r.content.decode()  # nothing of the traceback leaks
    page = client.get("/w/no-such-workspace-page/x/y/")  # the dashboard keeps its HTML pages
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


# -- item 6: two creations at once (a real race on PostgreSQL) -----------------------------------------


def _race(monkeypatch, manager, calls):
    """Run `calls` in two threads, both past the service's own check before either inserts."""
    barrier = threading.Barrier(len(calls), timeout=20)
    original = manager.create

    def create(*args, **kwargs):
        barrier.wait()
        return original(*args, **kwargs)

    monkeypatch.setattr(manager, "create", create)
    results: list = [None] * len(calls)

    def run(i):
        try:
            results[i] = calls[i]()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="concurrent inserts need PostgreSQL (SQLite serializes writers)",
)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_datasets_with_one_name_at_once_one_wins_the_other_is_told(api, data_root, monkeypatch):
    (data_root / "t.csv").write_text("id,x\n1,2\n2,3\n")
    body = {"name": "same", "uri": str(data_root / "t.csv")}
    results = _race(monkeypatch, Dataset.objects, [lambda: register(api, **body), lambda: register(api, **body)])
    assert sorted(r.status_code for r in results) == [201, 400], [r.content for r in results]
    loser = next(r for r in results if r.status_code == 400)
    assert loser.json() == {"name": ["a dataset named 'same' already exists"]}
    assert Dataset.objects.filter(name="same").count() == 1


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_workspaces_with_one_slug_at_once_one_wins_the_other_is_told(api, monkeypatch):
    calls = [
        lambda who=who: api(who).post("/api/v1/workspaces/", {"slug": "initech", "name": who}, format="json")
        for who in ("alice", "charlie")
    ]
    results = _race(monkeypatch, Workspace.objects, calls)
    assert sorted(r.status_code for r in results) == [201, 400], [r.content for r in results]
    loser = next(r for r in results if r.status_code == 400)
    assert loser.json() == {"slug": ["slug 'initech' is not available: choose another"]}
    assert Workspace.objects.filter(slug="initech").count() == 1


# -- items 7 and 8: the file's problems, named at their place, by both CSV readers -----------------------

LATIN1_LATE = b"id,name\n" + b"".join(b"%d,abc\n" % i for i in range(1, 40_000)) + b"40000,caf\xe9\n"
BAD_CSV = [
    # labels (registered with label_column="label")
    ("one_class", b"id,label\n1,1\n2,1\n3,1\n", "label", "label column 'label' has a single class (1)"),
    ("three_classes", b"id,label\n1,0\n2,1\n3,2\n", "label", "has 3 classes (0, 1, 2); a label must be binary"),
    ("not_binary", b"id,label\n1,1\n2,2\n", "label", "must be binary, 0 or 1; found 1, 2"),
    ("not_numbers", b"id,label\n1,yes\n2,no\n", "label", "must be binary, 0 or 1; found 'no', 'yes'"),
    ("many_classes", b"id,label\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(80)), "label", "more than 50"),
    # NUL bytes
    ("nul_value", b"id,x\n1,a\n2,b\x00c\n", None, "line 3, field 2 ('x'): the value contains a NUL byte"),
    # bad bytes: the exact line and column, even far into the file (the decoder reads ahead)
    ("latin1", b"id,name\n1,caf\xe9\n", None, "is not UTF-8: line 2, column 6: byte 0xe9"),
    ("latin1_late", LATIN1_LATE, None, "is not UTF-8: line 40001, column 10: byte 0xe9"),
    ("multibyte_then_bad", "id,name\n1,é€\n2,ok\n".encode() + b"3,\xff\n", None, "line 4, column 3: byte 0xff"),
    # an unterminated quote: where it opened, not where the file ended
    ("open_quote", b'id,x\n1,a\n2,"b\n3,c\n4,d\n', None, "line 3, column 3: a quoted value opened here is never"),
    ("open_quote_crlf", b'id,x\r\n1,"a""b",c\r\n', None, None),  # not that: a wrong number of fields
    # duplicate ids: which line, which value
    ("dups", b"id,x\n1,a\n2,b\n3,c\n2,d\n", None, "duplicates, e.g. '2' on line 5 (first on line 3)"),
    # what the file really is
    ("gzip", gzip.compress(b"id,x\n1,2\n"), None, "is a gzip-compressed file"),
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40), None, "is a PNG image"),
    ("utf16", "id,x\n1,2\n".encode("utf-16"), None, "is UTF-16 text"),
    ("utf16_no_bom", "id,x\n1,2\n".encode("utf-16-le"), None, "is UTF-16 text"),
]


@pytest.mark.parametrize(("name", "content", "label", "message"), BAD_CSV, ids=[b[0] for b in BAD_CSV])
@pytest.mark.parametrize("reader", [inspect_csv, inspect_csv_rows], ids=["fast", "rows"])
def test_both_readers_name_the_problem_and_its_place(data_root, reader, name, content, label, message):
    path = data_root / f"{name}.csv"
    path.write_bytes(content)
    with pytest.raises(DataFileError) as err:
        reader(path, "id", label)
    if message is None:
        assert "expected 2 fields, found 3" in err.value.message
    else:
        assert message in err.value.message


def test_the_api_gives_the_precise_message_and_registers_nothing(api, data_root):
    (data_root / "q.csv").write_bytes(b'id,x\n1,a\n2,"b\n3,c\n')
    r = register(api, name="q", uri=str(data_root / "q.csv"))
    assert r.status_code == 400
    assert re.search(r"line 3, column 3: a quoted value opened here is never closed", r.json()["uri"][0])
    (data_root / "one.csv").write_bytes(b"id,label\n1,0\n2,0\n")
    r = register(api, name="one", uri=str(data_root / "one.csv"), label_column="label")
    assert r.status_code == 400 and "single class (0)" in r.json()["label_column"][0]
    assert not Dataset.objects.exists()


# -- item 7: proposals for training check the leading side's labels ------------------------------------


@pytest.fixture
def bad_labels(workspaces, data_root):
    """A dataset registered before labels were checked: its stored statistics show one class."""
    acme = workspaces["acme"]
    (data_root / "l.csv").write_text("id,age,label\n1,30,0\n2,40,1\n")
    ds = register_dataset(acme, name="labels", uri=str(data_root / "l.csv"), id_column="id", label_column="label")
    stats = {**ds.stats, "label": {"type": "integer", "nulls": 0, "count": 2, "min": 1.0, "max": 1.0, "distinct": 1}}
    Dataset.objects.filter(pk=ds.pk).update(stats=stats)
    ds.refresh_from_db()
    return ds


def test_a_training_proposal_on_a_one_class_label_is_refused_before_it_is_sent(api, workspaces, bad_labels):
    partner = connected_partner(workspaces["acme"])
    remote = shared_dataset(partner)
    body = {"partner": str(partner.id), "local_dataset": str(bad_labels.id), "remote_dataset": str(remote.id)}
    r = api("dave").post("/api/v1/workspaces/acme/tickets/", {**body, "kind": JobKind.VERTICAL_NN}, format="json")
    assert r.status_code == 400
    assert r.json() == {"local_dataset": ["dataset labels: label column 'label' has a single class: "
                                          "training needs rows of both classes, 0 and 1"]}  # fmt: skip
    r = api("dave").post("/api/v1/workspaces/acme/tickets/", {**body, "kind": JobKind.PSI}, format="json")
    assert r.status_code == 201, r.content  # a PSI join needs no label


def test_a_received_training_proposal_we_would_lead_on_bad_labels_is_refused_with_the_reason(workspaces, bad_labels):
    from apps.datasets.models import DatasetGrant
    from apps.tickets.choices import PartyRole

    partner = connected_partner(workspaces["acme"])
    DatasetGrant.objects.create(dataset=bad_labels, partner=partner)
    payload = {"ticket_id": "6c8f0a8e-5b7e-4d4c-9d44-3c1f0f1f6a01", "kind": JobKind.PSI_VERTICAL_NN,
               "proposer_role": PartyRole.FOLLOWER, "receiver_dataset_id": str(bad_labels.id),
               "proposer_dataset": {"id": "6c8f0a8e-5b7e-4d4c-9d44-3c1f0f1f6a02", "name": "theirs"}, "params": {}}  # fmt: skip
    ticket = receive_proposal(workspaces["acme"], partner, payload)
    assert ticket.status == TicketStatus.REJECTED
    assert "has a single class" in ticket.decision_comment


def test_a_runtime_report_with_an_out_of_range_step_is_a_400(workspaces, client):
    """The report endpoint checks numbers against their column before saving (a 500 on PostgreSQL before)."""
    from apps.jobs.models import Job
    from apps.jobs.services import issue_runtime_token
    from apps.tickets.models import Ticket

    partner = connected_partner(workspaces["acme"])
    ticket = Ticket.objects.create(workspace=workspaces["acme"], partner=partner, name="t", kind=JobKind.PSI,
                                   role="leader", is_proposer=True, status="running")  # fmt: skip
    job = Job.objects.create(workspace=workspaces["acme"], ticket=ticket, role="leader", status="running")
    token = issue_runtime_token(job)
    event = {"type": "metric", "name": "loss", "value": 0.5, "step": 2**40, "split": "train"}
    r = client.post(f"/api/v1/runtime/jobs/{job.id}/report", {"events": [event]},
                    content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert r.status_code == 400 and "step is out of range" in str(r.json())
    assert not job.metrics.exists()


def test_an_integrity_error_no_service_foresaw_is_a_409_in_json():
    from django.db import IntegrityError

    from apps.core.drf import exception_handler

    r = exception_handler(IntegrityError("duplicate key value violates unique constraint"), {})
    assert r is not None and r.status_code == 409 and r.data["code"] == "conflict"
    assert "duplicate key" not in str(r.data)  # the database's wording stays in the log
