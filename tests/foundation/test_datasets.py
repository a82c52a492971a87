"""Registering data files: good files inspected, bad files refused with a named problem."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.audit.models import AuditEvent
from apps.datasets.models import Dataset
from tests.foundation.factories import features_csv, labelled_csv, write_csv

pytestmark = pytest.mark.django_db
URL = "/api/v1/workspaces/acme/datasets/"


def register(api, **body):
    return api("dave").post(URL, body, format="json")


def test_a_good_csv_is_inspected_and_saved(api, data_root):
    path = labelled_csv(data_root, rows=60)
    r = register(api, name="labels", uri=str(path), id_column="id", label_column="label")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["row_count"] == 60
    assert body["schema"] == [
        {"name": "id", "type": "string"},
        {"name": "age", "type": "integer"},
        {"name": "label", "type": "integer"},
    ]
    assert body["stats"]["label"] == {
        "type": "integer",
        "nulls": 0,
        "count": 60,
        "min": 0.0,
        "max": 1.0,
        "mean": 0.5,
        "distinct": 2,
    }
    assert body["stats"]["id"]["type"] == "string" and "distinct" not in body["stats"]["id"]
    assert body["checksum"].startswith("sha256:") and len(body["checksum"]) == 71
    assert AuditEvent.objects.filter(verb="dataset.registered", object_id=body["id"]).exists()


def test_a_relative_path_resolves_in_the_workspaces_folder(api, data_root):
    features_csv(data_root)
    r = register(api, name="features", uri="users_features.csv", id_column="id")
    assert r.status_code == 201, r.content
    assert r.json()["stats"]["city"]["distinct"] == 2


def test_a_parquet_file_is_inspected(api, data_root):
    table = pa.table(
        {"id": [f"p{i}" for i in range(10)], "x": [float(i) for i in range(10)], "label": [i % 2 for i in range(10)]}
    )
    pq.write_table(table, data_root / "t.parquet")
    r = register(api, name="pq", uri=str(data_root / "t.parquet"), id_column="id", label_column="label")
    assert r.status_code == 201, r.content
    assert r.json()["format"] == "parquet" and r.json()["row_count"] == 10
    assert r.json()["stats"]["x"]["mean"] == pytest.approx(4.5)


BAD_FILES = [
    ("missing.csv", None, "id", "", "does not exist"),
    ("empty.csv", "", "id", "", "is empty"),
    ("header_only.csv", "id,x\n", "id", "", "no rows"),
    ("latin1.csv", "id,name\n1,caf\xe9\n", "id", "", "not UTF-8"),
    ("ragged.csv", "id,x\n1,2\n2,3,4\n", "id", "", "line 3: expected 2 fields, found 3"),
    ("dups.csv", "id,x\n1,2\n2,3\n1,4\n", "id", "", "duplicates, e.g. '1'"),
    ("noid.csv", "key,x\n1,2\n", "id", "", "id column 'id' is not in the file"),
    ("emptyid.csv", "id,x\n1,2\n,3\n", "id", "", "line 3: id column 'id' is empty"),
    ("badlabel.csv", "id,label\n1,yes\n2,no\n", "id", "label", "must be binary, 0 or 1; found 'no', 'yes'"),
    ("nolabel.csv", "id,x\n1,2\n", "id", "label", "label column 'label' is not in the file"),
    ("data.json", "{}", "id", "", "unsupported format"),
]


@pytest.mark.parametrize(("name", "content", "id_column", "label", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_gets_a_400_naming_the_problem_and_saves_nothing(
    api, data_root, name, content, id_column, label, message
):
    if content is not None:
        (data_root / name).write_bytes(content.encode("latin-1") if "latin1" in name else content.encode())
    events = AuditEvent.objects.count()
    r = register(api, name="bad", uri=str(data_root / name), id_column=id_column, label_column=label)
    assert r.status_code == 400, r.content
    assert message in str(r.json())
    assert not Dataset.objects.exists()
    assert AuditEvent.objects.count() == events


def test_a_path_outside_the_data_roots_is_refused(api, data_root, tmp_path):
    outside = write_csv(tmp_path, "secret.csv", "id,x\n1,2\n")
    for uri in (str(outside), "file://" + str(outside)):
        r = register(api, name="escape", uri=uri, id_column="id")
        assert r.status_code == 400
        assert "outside this workspace's data folders" in r.json()["uri"][0]
    for uri in (str(data_root / ".." / "secret.csv"), "../secret.csv"):
        r = register(api, name="escape", uri=uri, id_column="id")
        assert r.status_code == 400 and "'..' is not allowed" in r.json()["uri"][0]
    assert not Dataset.objects.exists()


def test_a_symlink_out_of_the_data_root_is_refused(api, data_root, tmp_path):
    outside = write_csv(tmp_path, "secret.csv", "id,x\n1,2\n")
    (data_root / "link.csv").symlink_to(outside)
    r = register(api, name="link", uri=str(data_root / "link.csv"), id_column="id")
    assert r.status_code == 400 and "outside this workspace's data folders" in r.json()["uri"][0]


def test_a_duplicate_name_is_refused(api, data_root):
    path = labelled_csv(data_root)
    assert register(api, name="labels", uri=str(path), id_column="id").status_code == 201
    r = register(api, name="labels", uri=str(path), id_column="id")
    assert r.status_code == 400 and "already exists" in r.json()["name"][0]


def test_missing_fields_are_named(api, data_root):
    r = register(api, name="x")
    assert r.status_code == 400
    assert set(r.json()) == {"uri", "id_column"}


def test_registration_streams_a_large_file_in_bounded_memory(data_root):
    """200k rows (about 6 MB) inspected with far less than the file's worth of Python objects."""
    import tracemalloc

    from apps.datasets.inspect import inspect_file

    path = data_root / "big.csv"
    with path.open("w") as fh:
        fh.write("id,a,b,c\n")
        for i in range(200_000):
            fh.write(f"user-{i},{i % 97},{i * 0.5},{'x' if i % 2 else 'y'}\n")
    inspect_file(labelled_csv(data_root), "id", None)  # the readers' imports are not the file's memory
    tracemalloc.start()
    info = inspect_file(path, "id", None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.row_count == 200_000
    # 8 bytes per id hash (1.6 MB) plus sorting; a loaded file would be tens of MB of objects.
    assert peak < 12 * 1024 * 1024, peak


# -- the fast CSV reader gives exactly what the row-by-row reader gives ------------------------------

VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            "",
            "true",
            "FALSE",
            "True",
            "1_000",
            " 5",
            "5 ",
            "١٢",
            "0x1A",
            "+.5e-3",
            "1.",
            "nan",
            "-inf",
            "infinity",
            "n",
            "i",
            "N/A",
            "inf",
            "\u00a07",
            "cat3",
            "paris",
            "1e500",
            "-0.0",
            "0",
        ]
    ),  # fmt: skip
    st.text(alphabet=st.characters(blacklist_characters='",\r\n', blacklist_categories=("Cs",)), max_size=8),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.lists(VALUES, min_size=3, max_size=3), min_size=1, max_size=40),
    crlf=st.booleans(),
    blank_lines=st.booleans(),
    bom=st.booleans(),
)
def test_the_fast_reader_agrees_with_the_row_by_row_reader(data_root, rows, crlf, blank_lines, bom):
    from apps.datasets.inspect import DataFileError, inspect_csv, inspect_csv_rows

    end = "\r\n" if crlf else "\n"
    lines = ["id,a,b,c"] + [f"u{i}," + ",".join(r) for i, r in enumerate(rows)]
    if blank_lines:
        lines.insert(len(lines) // 2 + 1, "")
    path = data_root / "prop.csv"
    path.write_bytes(("\ufeff" if bom else "").encode() + (end.join(lines) + end).encode("utf-8"))

    def run(fn):
        try:
            return fn(path, "id", None)
        except DataFileError as exc:
            return ("error", exc.message, exc.field)

    assert run(inspect_csv) == run(inspect_csv_rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('id,x\n1,"a,b"\n2,c\n', None),  # quotes: the row-by-row reader decides
        ("id,x\r1,a\r2,b\r", None),  # lone CR line endings
        ("id,x\n1,a\n,b\n", "line 3: id column 'id' is empty"),
        ("id,x\n1,a\n2\n", "line 3: expected 2 fields, found 1"),
        ("id,x\n1,a\n1,b\n", "has duplicates, e.g. '1'"),
    ],
)
def test_unusual_csv_gets_the_row_by_row_readers_answer(data_root, content, message):
    from apps.datasets.inspect import DataFileError, inspect_csv, inspect_csv_rows

    path = data_root / "odd.csv"
    path.write_text(content, encoding="utf-8", newline="")
    if message is None:
        assert inspect_csv(path, "id", None) == inspect_csv_rows(path, "id", None)
    else:
        with pytest.raises(DataFileError, match=re.escape(message)):
            inspect_csv(path, "id", None)
