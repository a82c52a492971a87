"""Every page renders for every role; other tenants see nothing; anonymous users are sent to log in."""

from __future__ import annotations

import pytest

ROLES = ["alice", "erin", "carol", "dave", "bob"]


def pages(w) -> list[str]:
    s = "/w/acme/"
    return [
        s,
        s + "partners/",
        f"{s}partners/{w['partner'].pk}/",
        s + "datasets/",
        f"{s}datasets/{w['labels'].pk}/",
        f"{s}datasets/{w['features'].pk}/",
        s + "tickets/",
        s + "tickets/?status=pending&direction=received",
        f"{s}tickets/{w['sent'].pk}/",
        f"{s}tickets/{w['received'].pk}/",
        s + "jobs/",
        s + "jobs/?status=running",
        f"{s}jobs/{w['job'].pk}/",
        f"{s}jobs/{w['done'].pk}/",
        f"{s}jobs/{w['job'].pk}/live",
        s + "models/",
        f"{s}models/{w['mv'].pk}/",
        f"{s}models/compare?a={w['mv'].pk}&b={w['mv2'].pk}",
        s + "models/compare",
        s + "audit/",
        s + "audit/?verb=ticket&source=ui&actor=ali&since=2020-01-01&until=2999-01-01",
        s + "audit/?since=garbage&page=99",
    ]


@pytest.mark.parametrize("name", ROLES)
def test_every_page_renders_for_every_role(world, browser_client, name):
    client = browser_client(name)
    for url in pages(world):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code)
        assert b"Traceback" not in r.content


@pytest.mark.parametrize("name", ["alice", "erin", "dave"])
def test_writers_get_the_forms(world, browser_client, name):
    client = browser_client(name)
    for url in ("/w/acme/datasets/new", "/w/acme/tickets/new"):
        r = client.get(url)
        assert r.status_code == 200, url


def test_it_sends_viewer_away_from_forms_with_403(world, browser_client):
    client = browser_client("bob")
    for url in ("/w/acme/datasets/new", "/w/acme/tickets/new"):
        r = client.get(url)
        assert r.status_code == 403
        assert b"needs the Member role" in r.content


def test_charlie_sees_nothing_of_acme(world, browser_client):
    client = browser_client("charlie")
    for url in pages(world):
        assert client.get(url).status_code == 404, url
    assert client.get("/w/globex/").status_code == 200


def test_anonymous_is_sent_to_log_in(world, browser_client):
    r = browser_client(None).get("/w/acme/tickets/")
    assert r.status_code == 302
    assert r["Location"].startswith("/accounts/login/")


def test_home_goes_to_the_only_workspace(world, browser_client):
    r = browser_client("alice").get("/")
    assert r.status_code == 302 and r["Location"] == "/w/acme/"


def test_switcher_refuses_a_workspace_of_another_tenant(world, browser_client):
    r = browser_client("alice").get("/switch?workspace=globex")
    assert r["Location"] == "/"


def test_login_and_logout(world, client):
    r = client.get("/accounts/login/")
    assert r.status_code == 200 and b'<label for="id_username">' in r.content
    r = client.post("/accounts/login/", {"username": "alice", "password": "alice-password"})
    assert r.status_code == 302
    assert client.get("/w/acme/").status_code == 200
    r = client.post("/accounts/logout/")
    assert r.status_code == 302
    assert client.get("/w/acme/").status_code == 302


def test_bad_login_says_so(world, client):
    r = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert r.status_code == 200
    assert b"Please enter a correct username and password" in r.content


def test_unknown_page_is_a_friendly_404(world, browser_client):
    r = browser_client("alice").get("/w/acme/tickets/00000000-0000-0000-0000-000000000000/")
    assert r.status_code == 404


def test_overview_shows_what_waits_and_what_runs(world, browser_client):
    r = browser_client("carol").get("/w/acme/")
    body = r.content.decode()
    assert "Waiting for your decision" in body
    assert "beta proposes: scoring features" in body
    assert "Beta Bank" in body and "Healthy" in body
    assert 'aria-valuenow="60.0"' in body


def test_job_live_returns_state_and_new_points(world, browser_client):
    client = browser_client("bob")
    body = client.get(f"/w/acme/jobs/{world['job'].pk}/live").json()
    assert body["job"]["status"] == "running" and body["job"]["progress"] == 0.6
    assert len(body["metrics"]) == 36
    last = body["metrics"][-1]["id"]
    assert client.get(f"/w/acme/jobs/{world['job'].pk}/live?after={last}").json()["metrics"] == []


def test_dataset_page_shows_schema_and_stats(world, browser_client):
    body = browser_client("bob").get(f"/w/acme/datasets/{world['labels'].pk}/").content.decode()
    for text in ("user_id", "clicked", "age", "200", "59"):
        assert text in body


def test_the_stamp_changes_when_a_partner_decides_not_on_progress(world, browser_client):
    from apps.jobs.models import Job
    from apps.tickets.services import apply_remote_decision

    client = browser_client("bob")
    first = client.get("/w/acme/stamp").json()
    assert first["jobs"][str(world["job"].pk)]["progress"] == 0.6
    Job.objects.filter(pk=world["job"].pk).update(progress=0.7)  # a progress report
    second = client.get("/w/acme/stamp").json()
    assert second["stamp"] == first["stamp"] and second["jobs"][str(world["job"].pk)]["progress"] == 0.7
    apply_remote_decision(world["sent"], "rejected", {"reason": "no"})
    assert client.get("/w/acme/stamp").json()["stamp"] != first["stamp"]
    assert browser_client("charlie").get("/w/acme/stamp").status_code == 404


def test_the_stamp_changes_when_an_invitation_or_a_member_changes(world, browser_client):
    from apps.peer.handshake import create_invitation, revoke_invitation
    from apps.workspaces.models import Membership

    client = browser_client("bob")
    stamps = [client.get("/w/acme/stamp").json()["stamp"]]
    invitation, _ = create_invitation(world["acme"], source="test")
    stamps.append(client.get("/w/acme/stamp").json()["stamp"])
    revoke_invitation(invitation, source="test")  # another admin's revoke shows without a reload
    stamps.append(client.get("/w/acme/stamp").json()["stamp"])
    Membership.objects.filter(workspace=world["acme"], user__username="dave").update(role="approver")
    stamps.append(client.get("/w/acme/stamp").json()["stamp"])
    assert len(set(stamps)) == 4, stamps


def test_pages_answering_a_post_do_not_refresh_themselves(world, browser_client):
    client = browser_client("erin")
    assert b'data-watch="/w/acme/stamp"' in client.get("/w/acme/partners/").content
    assert b"data-watch" not in client.post("/w/acme/partners/invite", {}).content
    assert b'data-watch=""' in client.get("/w/acme/tickets/new").content


def test_a_tree_models_page_shows_its_parameters_and_feature_importance(world, browser_client):
    mv = world["mv"]
    mv.metrics = {
        "metrics": {"validation": {"auc": 0.81}},
        "trees": 12,
        "feature_importance": {"age": {"gain": 3.5, "splits": 2}, "income": {"gain": 10.25, "splits": 7}},
    }
    mv.lineage = {**mv.lineage, "params": {"tree": {"max_depth": 4, "he_scheme": "ou"}}}
    mv.save()
    body = browser_client("erin").get(f"/w/acme/models/{mv.pk}/").content.decode()
    assert "Feature importance" in body and "Tree parameters" in body
    assert body.index(">income<") < body.index(">age<")  # largest gain first
    assert "10.25" in body and ">7<" in body
