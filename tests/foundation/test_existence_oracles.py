"""No answer tells a tenant whether another tenant's object exists.

Charlie owns globex and must learn nothing of acme: a filter, a body field or a
name naming one of acme's objects is answered exactly as one naming an object
that exists nowhere (same status, same message).
"""

from __future__ import annotations

import uuid

import pytest

from tests.foundation.factories import connected_partner, labelled_csv, shared_dataset
from tests.foundation.test_api_access import objects  # noqa: F401 - acme's partner, dataset, ticket, job, model

pytestmark = pytest.mark.django_db
GLOBEX = "/api/v1/workspaces/globex/"

FILTERS = [
    ("tickets/", "partner"),
    ("jobs/", "ticket"),
    ("model-versions/", "ticket"),
    ("partner-datasets/", "partner"),
]


def same_answer(a, b) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)


@pytest.mark.parametrize(("path", "param"), FILTERS, ids=[f"{p}?{q}=" for p, q in FILTERS])
def test_a_filter_naming_acme_object_answers_like_an_unknown_id(api, objects, path, param):  # noqa: F811
    charlie = api("charlie")
    acme_id = objects[param]
    foreign = charlie.get(f"{GLOBEX}{path}", {param: str(acme_id)})
    unknown = charlie.get(f"{GLOBEX}{path}", {param: str(uuid.uuid4())})
    same_answer(foreign, unknown)
    assert foreign.status_code == 400


def test_a_filter_naming_my_own_object_still_filters(api, objects, workspaces):  # noqa: F811
    mine = connected_partner(workspaces["globex"], name="mine")
    shared_dataset(mine)
    r = api("charlie").get(f"{GLOBEX}partner-datasets/", {"partner": str(mine.id)})
    assert r.status_code == 200 and r.json()["count"] == 1
    r = api("alice").get("/api/v1/workspaces/acme/jobs/", {"ticket": str(objects["ticket"])})
    assert r.status_code == 200 and r.json()["count"] == 1


def test_a_body_naming_acme_partner_or_dataset_answers_like_an_unknown_id(api, objects, workspaces, data_root):  # noqa: F811
    charlie = api("charlie")
    globex = workspaces["globex"]
    folder = data_root.parent / "globex"
    from apps.datasets.services import register_dataset

    ds = register_dataset(globex, name="g", uri=str(labelled_csv(folder)), id_column="id")
    mine = connected_partner(globex, name="mine")
    remote = shared_dataset(mine)

    def grant(partner_id):
        return charlie.post(f"{GLOBEX}datasets/{ds.id}/grants/", {"partner": str(partner_id)}, format="json")

    same_answer(grant(objects["partner"]), grant(uuid.uuid4()))

    def propose(**over):
        body = {"name": "t", "kind": "psi", "partner": str(mine.id), "local_dataset": str(ds.id)}
        body["remote_dataset"] = str(remote.id)
        return charlie.post(f"{GLOBEX}tickets/", {**body, **over}, format="json")

    for field in ("partner", "local_dataset"):
        foreign, unknown = (
            propose(**{field: str(objects[field.removeprefix("local_")])}),
            propose(**{field: str(uuid.uuid4())}),
        )
        same_answer(foreign, unknown)
        assert foreign.status_code in (400, 404), foreign.content
