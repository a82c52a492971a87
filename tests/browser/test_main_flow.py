"""The main flow in a real browser, across two live installations (web, peer service, worker each).

Alice (alpha's owner) invites; Bruno (beta's owner) accepts the code, registers a
bad file then a good one and grants it; Alice registers her labels and proposes
a ticket; Bea (beta's approver) approves it; Alice watches the job finish live
and opens the model version. Screenshots go to test-artifacts/screenshots/, and
the main ones to docs/screenshots/ for the user guide.

In CI the installations use PostgreSQL (DATABASE_URL names the server);
elsewhere SQLite. Each has its own filesystem broker under its var dir.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from demo.flow import USERS, running_pair
from tests.browser.conftest import Shots, accessibility_violations, watch_console

pytestmark = [pytest.mark.browser, pytest.mark.timeout(400)]
ROWS = 3_000  # per side, 75% overlap: big enough for a real AUC, small enough to train in seconds
EPOCHS = 2
VIEWPORT = {"width": 1360, "height": 900}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_pair(
        tmp_path_factory.mktemp("browser"),
        database_url=os.environ.get("DATABASE_URL") or None,
        db_prefix=f"fedsite_browser_{os.getpid()}",
        rows=ROWS,
        # Runtime ports of our own, away from `make demo` and the other live tests on this machine.
        runtime_ports=("28000-28499", "28500-28999"),
    ) as (alpha, beta, files):
        (beta.data_folder("beta") / "features_with_duplicates.csv").write_text("user_id,spend\nu1,3\nu2,4\nu1,5\n")
        yield alpha, beta, files


def login(new_context, inst, username: str, errors: list[str]):
    context = new_context(viewport=VIEWPORT, base_url=inst.url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    watch_console(page, errors)
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(USERS[inst.name][username][1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(rf"/w/{inst.name}/$"))
    return page


def reload_until(page, check, timeout: float = 30.0, what: str = "condition") -> None:
    """Reload the page until `check()` is true (for pages without live updates)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} on {page.url}")
        time.sleep(0.5)
        page.reload()


def test_main_flow_in_the_browser(new_context, cluster):
    alpha, beta, files = cluster
    shots = Shots("flow")
    errors: list[str] = []

    # -- Alice logs in to alpha; nothing there yet -------------------------------------------
    alice = login(new_context, alpha, "alice", errors)
    shots(alice, "overview-empty")
    alice.get_by_role("link", name="Partners", exact=True).first.click()

    # -- Alice invites; Bruno accepts the code on beta ---------------------------------------
    alice.get_by_role("button", name="Create invitation code").click()
    code = alice.get_by_test_id("invitation-code").input_value()
    assert code.startswith("fedsite-invite-v1.")
    shots(alice, "partners-invitation", docs=True, full_page=False)

    bruno = login(new_context, beta, "bruno", errors)
    bruno.goto("/w/beta/partners/")
    bruno.get_by_label("Invitation code").fill(code)
    bruno.get_by_label("Partner name").fill("Alpha Ads")
    bruno.get_by_role("button", name="Connect").click()
    bruno.get_by_text("Connected to Alpha Ads.").wait_for()
    assert bruno.get_by_role("heading", level=1).inner_text().startswith("Alpha Ads")
    shots(bruno, "partner-detail", docs=True)

    alice.goto("/w/alpha/partners/")
    alice.get_by_text("Connected", exact=True).wait_for()
    shots(alice, "partners", docs=True)

    # -- Bruno registers a bad file (the error shows in the form), then the good one ---------
    bruno.goto("/w/beta/datasets/new")
    bruno.get_by_label("Name").fill("users_features")
    bruno.get_by_label("File path").fill(str(beta.data_folder("beta") / "features_with_duplicates.csv"))
    bruno.get_by_label("ID column").fill("user_id")
    bruno.get_by_role("button", name="Check and register").click()
    error = bruno.locator("#id_id_column_error")
    error.wait_for()
    assert "has duplicates, e.g. 'u1'" in error.inner_text()
    shots(bruno, "dataset-bad-file", docs=True)
    violations = accessibility_violations(bruno)  # the form with its error
    bruno.get_by_label("File path").fill(str(files["follower"]))
    bruno.get_by_role("button", name="Check and register").click()
    bruno.get_by_text(f"Registered users_features: {ROWS:,} rows.").wait_for()
    shots(bruno, "dataset-detail", docs=True)
    bruno.get_by_role("combobox", name="Partner").select_option(label="Alpha Ads")
    bruno.get_by_role("button", name="Grant").click()
    bruno.get_by_text("Alpha Ads may now use users_features in proposals.").wait_for()

    # -- Alice registers her labels and proposes a ticket ------------------------------------
    alice.goto("/w/alpha/datasets/new")
    alice.get_by_label("Name").fill("users_labels")
    alice.get_by_label("File path").fill(str(files["leader"]))
    alice.get_by_label("ID column").fill("user_id")
    alice.get_by_label("Label column").fill("converted")
    alice.get_by_role("button", name="Check and register").click()
    alice.get_by_text("Registered users_labels").wait_for()

    alice.goto("/w/alpha/tickets/new")
    reload_until(alice, lambda: alice.get_by_label("The partner's dataset").count() > 0, what="beta's shared dataset")
    form = alice.locator("form[data-ticket-form]")
    form.get_by_label("Partner", exact=True).select_option(index=1)
    form.get_by_label("Your dataset").select_option(label="users_labels (labels)")
    form.get_by_label("The partner's dataset").select_option(index=1)
    form.get_by_label("Job", exact=True).select_option("psi_vertical_nn")
    form.get_by_label("Name").fill("Conversions × basket features")
    form.get_by_label("Note to the partner").fill("Join on user_id, then train a conversion model.")
    form.get_by_label("Epochs").fill("0")
    form.get_by_role("button", name="Send proposal").click()
    assert "must be an integer from 1 to 1000" in alice.locator("#id_train_epochs_error").inner_text()
    alice.locator("form[data-ticket-form]").get_by_label("Epochs").fill(str(EPOCHS))
    shots(alice, "ticket-propose", docs=True)
    alice.locator("form[data-ticket-form]").get_by_role("button", name="Send proposal").click()
    alice.get_by_text("Proposed to").wait_for()
    ticket_url = alice.url

    # -- Bea (beta's approver) sees it waiting and approves with a comment ---------------------
    # Her overview refreshes itself when the proposal arrives.
    bea = login(new_context, beta, "bea", errors)
    bea.get_by_role("link", name="Conversions × basket features").wait_for()
    shots(bea, "overview-waiting", docs=True)
    bea.get_by_role("link", name="Conversions × basket features").click()
    bea.get_by_label("Comment").fill("Approved for the Q3 pilot.")
    shots(bea, "ticket-decide", docs=True)
    bea.get_by_role("button", name="Approve and start").click()
    bea.get_by_text("Approved. Both sides are starting the job.").wait_for()

    # -- Alice watches the job: progress and curves update live, then the model version ------
    alice.goto(ticket_url)
    alice.get_by_role("link", name="Attempt 1").wait_for()  # the ticket page refreshes itself when the job starts
    assert alice.get_by_text("Approved for the Q3 pilot.").count() > 0  # the partner's comment, in the timeline
    shots(alice, "ticket-timeline", docs=True)
    alice.get_by_role("link", name="Attempt 1").click()
    alice.wait_for_function(
        "() => window.Chart && Object.values(Chart.instances).some(c => c.data.datasets.length > 0)", timeout=150_000
    )
    shots(alice, "job-live", docs=True)
    badge = alice.locator("[data-field=status-badge]")
    try:
        badge.get_by_text(re.compile("Succeeded|Failed|Cancelled")).wait_for(timeout=150_000)
    finally:
        shots(alice, "job-end")
    assert badge.inner_text() == "Succeeded", (alice.locator("#job-errors").inner_text(), alpha.log("worker")[-3000:])
    open_model = alice.get_by_role("link", name="Open model version")
    open_model.wait_for(timeout=30_000)
    alice.wait_for_function(
        "() => Object.values(Chart.instances).some(c => c.data.datasets.some(d => d.label.includes('AUC')))"
    )
    shots(alice, "job-finished", docs=True)
    violations += accessibility_violations(alice)  # progress bars, charts, log
    open_model.click()
    alice.get_by_text("Lineage").wait_for()
    assert alice.get_by_text("Conversions × basket features").count() > 0
    shots(alice, "model-version", docs=True)

    # Beta's side shows the same job finished.
    bea.goto("/w/beta/jobs/")
    bea.locator("table .badge", has_text="Succeeded").first.wait_for(timeout=60_000)

    alice.goto("/w/alpha/audit/")
    shots(alice, "audit-log", docs=True)
    alice.goto("/w/alpha/")
    shots(alice, "overview", docs=True)
    # A form re-rendered with its errors answers 400, which the browser logs; nothing else may fail.
    assert not [e for e in errors if "status of 400" not in e], errors
    assert not violations, "\n".join(violations)
