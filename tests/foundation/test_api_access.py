"""Every endpoint: anonymous 401, a role too low 403, another workspace 404."""

from __future__ import annotations

import pytest

from apps.datasets.services import register_dataset
from apps.jobs.models import Job
from apps.peer.handshake import create_invitation
from apps.registry.models import ModelVersion
from apps.tickets.choices import JobKind, PartyRole, TicketStatus
from apps.tickets.models import Ticket
from apps.workspaces.choices import RANK, Role
from tests.foundation.factories import connected_partner, labelled_csv

pytestmark = pytest.mark.django_db


@pytest.fixture
def objects(users, workspaces, data_root):
    acme = workspaces["acme"]
    partner = connected_partner(acme)
    ds = register_dataset(acme, name="labels", uri=str(labelled_csv(data_root)), id_column="id", label_column="label")
    ticket = Ticket.objects.create(
        workspace=acme,
        partner=partner,
        name="t",
        kind=JobKind.PSI,
        role=PartyRole.FOLLOWER,
        is_proposer=False,
        local_dataset=ds,
        status=TicketStatus.PENDING,
    )
    job = Job.objects.create(workspace=acme, ticket=ticket, role=PartyRole.FOLLOWER)
    mv = ModelVersion.objects.create(
        workspace=acme, ticket=ticket, job=job, name="mv", role=PartyRole.FOLLOWER, artifact_uri="/tmp/m"
    )
    return {
        "partner": partner.id,
        "dataset": ds.id,
        "ticket": ticket.id,
        "job": job.id,
        "mv": mv.id,
        "member": acme.memberships.get(user__username="bob").id,
        "invitation": create_invitation(acme, source="test")[0].id,
    }


# (method, path under /api/v1/workspaces/{slug}/, minimum role)
ENDPOINTS = [
    ("get", "members/", Role.VIEWER),
    ("post", "members/", Role.ADMIN),
    ("patch", "members/{member}/", Role.ADMIN),
    ("delete", "members/{member}/", Role.ADMIN),
    ("get", "partners/", Role.VIEWER),
    ("get", "partners/{partner}/", Role.VIEWER),
    ("patch", "partners/{partner}/", Role.ADMIN),
    ("post", "partners/{partner}/suspend/", Role.ADMIN),
    ("post", "partners/{partner}/resume/", Role.ADMIN),
    ("get", "partners/invitations/", Role.VIEWER),
    ("post", "partners/invitations/", Role.ADMIN),
    ("post", "partners/invitations/{invitation}/revoke/", Role.ADMIN),
    ("post", "partners/accept/", Role.ADMIN),
    ("get", "datasets/", Role.VIEWER),
    ("get", "datasets/{dataset}/", Role.VIEWER),
    ("post", "datasets/", Role.MEMBER),
    ("post", "datasets/{dataset}/grants/", Role.ADMIN),
    ("post", "datasets/{dataset}/revoke/", Role.ADMIN),
    ("delete", "datasets/{dataset}/", Role.ADMIN),
    ("get", "partner-datasets/", Role.VIEWER),
    ("get", "tickets/", Role.VIEWER),
    ("get", "tickets/{ticket}/", Role.VIEWER),
    ("post", "tickets/", Role.MEMBER),
    ("post", "tickets/{ticket}/approve/", Role.APPROVER),
    ("post", "tickets/{ticket}/reject/", Role.APPROVER),
    ("post", "tickets/{ticket}/withdraw/", Role.MEMBER),
    ("get", "jobs/", Role.VIEWER),
    ("get", "jobs/{job}/", Role.VIEWER),
    ("get", "jobs/{job}/metrics/", Role.VIEWER),
    ("post", "jobs/{job}/cancel/", Role.MEMBER),
    ("post", "jobs/{job}/retry/", Role.APPROVER),
    ("get", "model-versions/", Role.VIEWER),
    ("get", "model-versions/{mv}/", Role.VIEWER),
    ("post", "model-versions/{mv}/promote/", Role.APPROVER),
    ("post", "model-versions/{mv}/archive/", Role.APPROVER),
    ("get", "audit-events/", Role.VIEWER),
]
PERSONA_BY_ROLE = {
    Role.OWNER: "alice",
    Role.ADMIN: "erin",
    Role.APPROVER: "carol",
    Role.MEMBER: "dave",
    Role.VIEWER: "bob",
}
IDS = [f"{m.upper()} {p}" for m, p, _ in ENDPOINTS]


def call(client, method, path, objects, slug="acme"):
    url = f"/api/v1/workspaces/{slug}/" + path.format(**objects)
    return getattr(client, method)(url, {}, format="json")


@pytest.mark.parametrize(("method", "path", "minimum"), ENDPOINTS, ids=IDS)
def test_anonymous_gets_401(api, objects, method, path, minimum):
    assert call(api(None), method, path, objects).status_code == 401


@pytest.mark.parametrize(("method", "path", "minimum"), ENDPOINTS, ids=IDS)
def test_a_role_below_the_minimum_gets_403(api, objects, method, path, minimum):
    lower = [r for r in RANK if RANK[r] < RANK[minimum]]
    for role in lower:
        response = call(api(PERSONA_BY_ROLE[role]), method, path, objects)
        assert response.status_code == 403, (role, response.content)
        assert minimum in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "minimum"), ENDPOINTS, ids=IDS)
def test_charlie_of_another_workspace_gets_404(api, objects, method, path, minimum):
    assert call(api("charlie"), method, path, objects).status_code == 404
    if "{" in path:
        # Charlie's own workspace, acme's object id: still nothing to see.
        assert call(api("charlie"), method, path, objects, slug="globex").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "minimum"),
    [e for e in ENDPOINTS if e[0] == "get"],
    ids=[i for i, e in zip(IDS, ENDPOINTS, strict=True) if e[0] == "get"],
)
def test_a_viewer_reads_everything(api, objects, method, path, minimum):
    assert call(api("bob"), method, path, objects).status_code == 200


def test_workspace_list_shows_only_my_workspaces(api, users):
    slugs = [w["slug"] for w in api("charlie").get("/api/v1/workspaces/").json()["results"]]
    assert slugs == ["globex"]
    assert api("charlie").get("/api/v1/workspaces/acme/").status_code == 404
    assert api(None).get("/api/v1/workspaces/").status_code == 401


def test_creating_a_workspace_makes_me_its_owner(api, users):
    r = api("bob").post("/api/v1/workspaces/", {"slug": "bobs-lab", "name": "Bob's lab"}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["role"] == "owner"
    again = api("bob").post("/api/v1/workspaces/", {"slug": "bobs-lab", "name": "dup"}, format="json")
    assert again.status_code == 400
    assert "already exists" in again.json()["slug"][0]


def test_session_auth_works_for_the_api(client, users):
    assert client.login(username="bob", password="bob-password")
    assert client.get("/api/v1/workspaces/acme/tickets/").status_code == 200


def test_health_endpoints(client, db):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
