"""Every page in a real browser, for an owner and a viewer, on a populated workspace (Django's live server).

Checks that pages render without JavaScript errors, that the live job page
draws its charts, and takes the screenshots the user guide uses.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import Shots, accessibility_violations, watch_console
from tests.dashboard.conftest import world  # noqa: F401  (the populated workspace)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(context, base: str, username: str):
    page = context.new_page()
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"{username}-password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/w/acme/")
    return page


def test_every_page_in_a_browser(new_context, live_server, world):  # noqa: F811
    shots = Shots("tour")
    base = live_server.url
    errors: list[str] = []
    context = new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    watch_console(page, errors)
    page.goto(f"{base}/w/acme/")
    assert "/accounts/login/" in page.url
    shots(page, "login", docs=True)
    page.close()

    page = _login(context, base, "alice")
    watch_console(page, errors)
    shots(page, "overview", docs=True)
    w = world
    tour = {
        "partners": "/w/acme/partners/",
        "partner": f"/w/acme/partners/{w['partner'].pk}/",
        "datasets": "/w/acme/datasets/",
        "dataset": f"/w/acme/datasets/{w['labels'].pk}/",
        "dataset-new": "/w/acme/datasets/new",
        "tickets": "/w/acme/tickets/",
        "ticket-new": "/w/acme/tickets/new",
        "ticket-received": f"/w/acme/tickets/{w['received'].pk}/",
        "ticket-sent": f"/w/acme/tickets/{w['sent'].pk}/",
        "jobs": "/w/acme/jobs/",
        "models": "/w/acme/models/",
        "model": f"/w/acme/models/{w['mv'].pk}/",
        "model-compare": f"/w/acme/models/compare?a={w['mv'].pk}&b={w['mv2'].pk}",
        "members": "/w/acme/members/",
        "audit": "/w/acme/audit/",
    }
    violations = accessibility_violations(page)
    for name, path in tour.items():
        page.goto(base + path)
        assert page.locator("h1").count() == 1, name
        shots(page, name)
        violations += accessibility_violations(page)

    # The live job page draws both charts from the metric points.
    page.goto(f"{base}/w/acme/jobs/{w['job'].pk}/")
    page.wait_for_function(
        "() => window.Chart && Object.keys(window.Chart.instances).length === 2"
        " && Object.values(window.Chart.instances).every(c => c.data.datasets.length > 0)"  # after the first poll
    )
    datasets = page.evaluate(
        "() => Object.values(window.Chart.instances).map(c => c.data.datasets.map(d => [d.label, d.data.length]))"
    )
    assert ["train loss", 30] in datasets[0] and ["validation AUC", 3] in datasets[1]
    shots(page, "job-running")

    # The ticket form shows only the parameters its job kind uses.
    page.goto(f"{base}/w/acme/tickets/new")
    assert page.get_by_label("Epochs").is_visible()
    page.get_by_label("Job", exact=True).select_option("psi")
    assert not page.get_by_label("Epochs").is_visible()

    # A viewer sees the same pages without the actions.
    viewer = _login(new_context(viewport={"width": 1360, "height": 900}), base, "bob")
    viewer.goto(f"{base}/w/acme/tickets/{w['received'].pk}/")
    assert viewer.get_by_role("button", name="Approve and start").count() == 0
    viewer.goto(f"{base}/w/acme/datasets/")
    assert viewer.get_by_role("link", name="Register a dataset").count() == 0
    shots(viewer, "viewer-datasets")

    # Under the Content-Security-Policy (no inline script or style): the admin and the API docs work too.
    response = page.goto(f"{base}/w/acme/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.goto(f"{base}/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    page.goto(f"{base}/admin/")
    assert page.locator("#content").count() == 1
    csp = [e for e in errors if "Content Security Policy" in e]
    assert not csp, "\n".join(csp)
    page.goto(f"{base}/w/acme/")

    # User menu and logout.
    page.get_by_text("alice", exact=True).click()
    page.get_by_role("menuitem", name="Log out").click()
    page.wait_for_url(f"{base}/accounts/login/")
    assert not [e for e in errors if "favicon" not in e], errors
    assert not violations, "\n".join(violations)
