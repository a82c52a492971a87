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


# -- names: workspace slugs and usernames ---------------------------------------------------


def create(api, who: str, slug: str):
    return api(who).post("/api/v1/workspaces/", {"slug": slug, "name": slug}, format="json")


def test_a_taken_slug_is_only_not_available_to_someone_outside_that_workspace(api, users, settings):
    settings.FEDSITE_LOGIN_FAILURE_LIMIT = 50
    r = create(api, "charlie", "acme")
    assert r.status_code == 400
    assert r.json() == {"slug": ["slug 'acme' is not available: choose another"]}
    assert "exist" not in str(r.json())
    # A member of acme, or the operator, is told plainly.
    assert "already exists" in create(api, "bob", "acme").json()["slug"][0]
    users["charlie"].is_staff = True
    users["charlie"].save()
    assert create(api, "charlie", "acme").json() == {"slug": ["a workspace with slug 'acme' already exists"]}


def test_asking_for_taken_slugs_is_throttled_per_user(api, users, settings):
    settings.FEDSITE_LOGIN_FAILURE_LIMIT = 3
    for _ in range(3):
        assert create(api, "charlie", "acme").status_code == 400
    r = create(api, "charlie", "free-slug")
    assert r.status_code == 429 and "too many refused names" in str(r.json())
    assert create(api, "bob", "free-slug").status_code == 201  # someone else is not held back


def test_without_self_service_only_the_operator_creates_workspaces(api, users, settings):
    settings.FEDSITE_SELF_SERVICE_WORKSPACES = False
    taken, free = create(api, "charlie", "acme"), create(api, "charlie", "free-slug")
    assert taken.status_code == free.status_code == 403
    assert taken.content == free.content
    users["charlie"].is_staff = True
    users["charlie"].save()
    assert create(api, "charlie", "free-slug").status_code == 201


def add(api, who: str, username: str, slug: str = "acme"):
    return api(who).post(f"/api/v1/workspaces/{slug}/members/", {"username": username, "role": "viewer"}, format="json")


def test_adding_another_tenants_user_answers_like_an_unknown_name(api, users, workspaces):
    from django.contrib.auth import get_user_model

    # Charlie belongs to globex only: to acme's owner, his name is as unknown as a made-up one.
    foreign, unknown = add(api, "alice", "charlie"), add(api, "alice", "ghost")
    assert foreign.status_code == unknown.status_code == 400
    assert str(foreign.json()).replace("charlie", "ghost") == str(unknown.json())
    # An account in no workspace yet, or one sharing a workspace with the owner, can be added.
    get_user_model().objects.create_user("newcomer", password="newcomer-pw")
    assert add(api, "alice", "newcomer").status_code == 201
    assert add(api, "charlie", "newcomer", slug="globex").status_code == 400  # acme's now
    from apps.workspaces.models import Membership

    Membership.objects.create(workspace=workspaces["globex"], user=users["alice"], role="viewer")
    assert add(api, "alice", "charlie").status_code == 201  # alice sees charlie in globex


def test_the_operator_adds_anyone(users, workspaces):
    from apps.workspaces.services import add_member

    m = add_member(workspaces["acme"], username="charlie", role="viewer", acting_user=None, source="cli")
    assert m.user.username == "charlie"
