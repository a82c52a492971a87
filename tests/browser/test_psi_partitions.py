"""A partitioned PSI job's page in a real browser: the partitions table follows the page's once-a-second poll."""

from __future__ import annotations

import pytest

from apps.jobs.services import apply_report
from tests.browser.conftest import accessibility_violations, watch_console
from tests.browser.test_tour import _login
from tests.dashboard.conftest import world  # noqa: F401  (the populated workspace)
from tests.dashboard.test_psi_partitions_page import psi_job  # noqa: F401  (a 3-partition psi job)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_partitions_table_updates_live_and_names_a_failed_partition(new_context, live_server, psi_job):  # noqa: F811
    errors: list[str] = []
    context = new_context(viewport={"width": 1360, "height": 900})
    page = _login(context, live_server.url, "bob")
    watch_console(page, errors)
    page.goto(f"{live_server.url}/w/acme/jobs/{psi_job.pk}/")
    assert page.locator("[data-field=partition-count]").inner_text() == "3"
    assert page.locator("tr[data-partition='1']").get_attribute("data-state") == "pending"

    apply_report(psi_job, [{"type": "progress", "value": 0.75, "stage": "psi.p1of3"}])
    page.wait_for_selector("tr[data-partition='1'][data-state='running']", timeout=10_000)
    assert "75%" in page.locator("tr[data-partition='1']").inner_text()

    apply_report(psi_job, [{"type": "failed", "error": "error: partition 1 of 3: the partner disconnected"}])
    page.wait_for_selector("tr[data-partition='1'][data-state='failed']", timeout=10_000)
    page.wait_for_function(
        "() => document.querySelector('[data-partition-failed]')?.textContent.includes('Partition 1 of 3 failed')"
    )
    assert "the partner disconnected" in page.locator("[data-partition-failed]").inner_text()
    assert page.locator("tr[data-partition='0']").get_attribute("data-state") == "stopped"
    assert accessibility_violations(page) == []
    assert not errors, errors
