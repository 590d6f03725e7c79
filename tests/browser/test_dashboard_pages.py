"""The dashboard's pages in real Chromium against a real fleet: each shows what the broker, the registry and the
history say; filters and the next page work; the read-only role sees no action and its POST is refused.

One fleet (Redis, a worker with ``-E``) and one ``taskfleet dashboard`` process serve the whole module; every page's
requests must stay on the dashboard's origin (the ``open_page`` fixture checks it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page

from taskfleet import AsyncResult
from tests import tasks
from tests.browser.conftest import QUEUE, Fleet, OpenPage, screenshot
from tests.support.browser import reload_until
from tests.support.dashboard import DashboardProcess

pytestmark = pytest.mark.integration

#: A queue no worker consumes: what is sent there stays SENT, ready in the broker.
PARKED = "parked"
#: How many extra tasks make the tasks list longer than one page (the dashboard shows 50 a page).
MANY = 60


@dataclass
class Sent:
    """The tasks the module sent, by what they show."""

    succeeded: AsyncResult
    failed: AsyncResult
    parked: AsyncResult
    delayed: AsyncResult
    many: list[AsyncResult]


@pytest.fixture(scope="module")
def sent(fleet: Fleet) -> Sent:
    """Given tasks of every kind: one that succeeds, one that fails, one parked on a queue without a worker, one
    delayed a minute, and ``MANY`` quick ones; the finished ones have finished."""
    succeeded = tasks.add.delay(2, 3)
    failed = tasks.fail.delay("boom in the browser test")
    parked = tasks.add.apply_async((7, 8), queue=PARKED)
    delayed = tasks.add.apply_async((1, 1), countdown=60)
    many = [tasks.add.delay(i, 1000) for i in range(MANY)]
    assert succeeded.get(timeout=15) == 5
    with pytest.raises(Exception, match="boom"):
        failed.get(timeout=15)
    for result in many:
        result.get(timeout=30)
    return Sent(succeeded, failed, parked, delayed, many)


def shown_states(page: Page) -> dict[str, str]:
    rows = page.locator("[data-testid=task-row]")
    return {rows.nth(i).get_attribute("data-task-id") or "": rows.nth(i).get_attribute("data-state") or ""
            for i in range(rows.count())}


def test_the_workers_page_lists_the_registrys_workers_and_the_task_each_child_runs(
        fleet: Fleet, dashboard: DashboardProcess, open_page: OpenPage, tmp_path: Path) -> None:
    # Given a task running on one child for a few seconds
    running = tasks.slow_record.delay(str(tmp_path / "slow.txt"), 4.0)
    records = fleet.app.control.workers()
    assert records, "the fleet's worker has a heartbeat"
    [record] = records
    row_selector = f"[data-testid=worker-row][data-worker='{record.id}']"
    # Then the page lists the registry's workers, with the running task on its child
    page = reload_until(open_page(dashboard), dashboard.url + "workers",
                        lambda p: p.locator(f"{row_selector} a[href$='/tasks/{running.id}']").count() == 1)
    rows = page.locator("[data-testid=worker-row]")
    assert {rows.nth(i).get_attribute("data-worker") for i in range(rows.count())} == {r.id for r in records}
    row = page.locator(row_selector)
    assert row.locator("[data-field=busy]").inner_text().strip() == f"1/{record.concurrency}"
    assert QUEUE in row.inner_text()
    assert row.locator("[data-testid=child]").count() == record.concurrency
    screenshot(page, "workers")
    assert running.get(timeout=15) == "done"


def test_the_queues_page_shows_the_brokers_depths(fleet: Fleet, sent: Sent, dashboard: DashboardProcess,
                                                   open_page: OpenPage) -> None:
    truth = {queue: fleet.broker.queue_depth(queue) for queue in (QUEUE, PARKED)}
    assert truth[PARKED].ready == 1
    assert truth[QUEUE].delayed == 1

    def matches(page: Page) -> bool:
        for queue, depth in truth.items():
            row = page.locator(f"[data-testid=queue-row-{queue}]")
            if row.count() != 1:
                return False
            shown = {f: row.locator(f"[data-field={f}]").inner_text().strip() for f in ("ready", "delayed", "dead")}
            if shown != {"ready": str(depth.ready), "delayed": str(depth.delayed), "dead": str(depth.dead)}:
                return False
        return True

    page = reload_until(open_page(dashboard), dashboard.url + "queues", matches,
                        message=f"the queues page never showed the broker's depths {truth}")
    screenshot(page, "queues")


def test_every_sent_task_is_listed_with_its_state_from_sent_on(sent: Sent, dashboard: DashboardProcess,
                                                               open_page: OpenPage) -> None:
    expected = {sent.succeeded.id: "SUCCESS", sent.failed.id: "FAILURE", sent.parked.id: "SENT",
                sent.delayed.id: "SENT"}

    page = open_page(dashboard)
    for task_id, state in expected.items():
        reload_until(page, dashboard.url + "tasks?task_id=" + task_id,
                     lambda p, t=task_id, s=state: shown_states(p) == {t: s},  # type: ignore[misc]
                     message=f"task {task_id} was never listed as {state}")
    page.goto(dashboard.url + "tasks")
    assert page.locator("[data-testid=task-row]").count() == 50
    screenshot(page, "tasks")


def test_a_tasks_page_shows_its_args_result_and_timeline(sent: Sent, dashboard: DashboardProcess,
                                                         open_page: OpenPage) -> None:
    page = reload_until(open_page(dashboard), dashboard.url + f"tasks/{sent.succeeded.id}",
                        lambda p: p.locator("[data-testid=timeline-row][data-event=task-succeeded]").count() == 1)
    assert page.locator("[data-testid=task-name]").inner_text() == tasks.add.name
    assert page.locator("[data-testid=task-state]").inner_text() == "SUCCESS"
    assert page.locator("[data-testid=task-args]").inner_text() == "(2, 3)"
    assert page.locator("[data-testid=task-result]").inner_text() == "5"
    events = page.locator("[data-testid=timeline-row]")
    order = [events.nth(i).get_attribute("data-event") for i in range(events.count())]
    assert order == ["task-sent", "task-received", "task-started", "task-succeeded"]
    screenshot(page, "task")


def test_a_failed_tasks_page_shows_its_exception_and_traceback(sent: Sent, dashboard: DashboardProcess,
                                                               open_page: OpenPage) -> None:
    page = reload_until(open_page(dashboard), dashboard.url + f"tasks/{sent.failed.id}",
                        lambda p: p.locator("[data-testid=task-traceback]").count() == 1)
    assert page.locator("[data-testid=task-state]").inner_text() == "FAILURE"
    assert "boom in the browser test" in page.locator("[data-testid=task-exception]").inner_text()
    assert "Traceback" in page.locator("[data-testid=task-traceback]").inner_text()
    assert "task-failed" in [e for e in page.locator("[data-testid=timeline-row]").evaluate_all(
        "rows => rows.map(r => r.dataset.event)")]


def test_the_filters_narrow_the_list_and_the_next_page_continues_it(sent: Sent, dashboard: DashboardProcess,
                                                                     open_page: OpenPage) -> None:
    page = open_page(dashboard)
    # Given every task listed (the history catches up with the events)
    ids = {r.id for r in sent.many}
    reload_until(page, dashboard.url + "tasks?state=SUCCESS&name=" + tasks.add.name,
                 lambda p: p.locator("[data-testid=next-page]").count() == 1)
    # When the state filter is set through the form
    page.goto(dashboard.url + "tasks")
    page.select_option("[data-testid=filter-state]", "FAILURE")
    page.click("[data-testid=filter-submit]")
    # Then only the failed task is listed
    assert shown_states(page) == {sent.failed.id: "FAILURE"}
    # And the args text filter finds one task by its arguments
    page.goto(dashboard.url + "tasks")
    page.fill("[data-testid=filter-text]", "(7, 1000)")
    page.click("[data-testid=filter-submit]")
    assert set(shown_states(page)) == {sent.many[7].id}
    # And the time range bounds the list (the form's times are UTC)
    an_hour_ago = datetime.fromtimestamp(time.time() - 3600, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    for since, until, listed in ((an_hour_ago, "", True), ("2099-01-01T00:00:00", "", False),
                                 ("", "2000-01-01T00:00:00", False)):
        page.goto(dashboard.url + "tasks")
        page.fill("[data-testid=filter-task-id]", sent.failed.id)
        page.fill("[data-testid=filter-since]", since)
        page.fill("[data-testid=filter-until]", until)
        page.click("[data-testid=filter-submit]")
        assert shown_states(page) == ({sent.failed.id: "FAILURE"} if listed else {}), (since, until)
        assert page.locator("[data-testid=no-tasks]").count() == (0 if listed else 1)
    # And the pages of a name's tasks, followed to the end, hold each task once
    page.goto(dashboard.url + "tasks")
    page.fill("[data-testid=filter-name]", tasks.add.name)
    page.select_option("[data-testid=filter-state]", "SUCCESS")
    page.click("[data-testid=filter-submit]")
    seen: list[str] = []
    while True:
        seen += list(shown_states(page))
        if page.locator("[data-testid=next-page]").count() == 0:
            break
        page.click("[data-testid=next-page]")
    assert len(seen) == len(set(seen))
    assert ids | {sent.succeeded.id} <= set(seen)


def test_the_overview_counts_what_finished(sent: Sent, dashboard: DashboardProcess, open_page: OpenPage) -> None:
    finished = MANY + 1  # the quick ones and add(2, 3)
    page = reload_until(open_page(dashboard), dashboard.url,
                        lambda p: int(p.locator("[data-testid=total-succeeded]").inner_text() or 0) >= finished)
    assert int(page.locator("[data-testid=total-failed]").inner_text()) >= 1
    page.wait_for_selector("[data-testid=chart-throughput] canvas")
    screenshot(page, "overview")


def test_a_page_loads_its_assets_and_data_from_the_dashboard_alone(sent: Sent, dashboard: DashboardProcess,
                                                                   open_page: OpenPage) -> None:
    page = open_page(dashboard)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(dashboard.url)
    page.wait_for_selector("[data-testid=chart-throughput] canvas")
    page.wait_for_load_state("networkidle")
    paths = {urlsplit(u).path for u in urls}
    assert any(p.startswith("/static/vendor/uPlot") for p in paths), paths
    assert any(p.startswith("/api/") for p in paths), paths  # the charts' data
    assert {f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in urls} == {dashboard.origin}


def test_the_read_only_role_sees_no_action_and_its_post_is_refused(fleet: Fleet, sent: Sent,
                                                                  dashboard: DashboardProcess,
                                                                  open_page: OpenPage) -> None:
    page = open_page(dashboard, role="read-only")
    page.goto(dashboard.url + f"tasks/{sent.delayed.id}")
    assert page.locator("[data-testid=who]").get_attribute("data-role") == "read-only"
    assert page.locator("[data-testid=revoke], [data-testid=terminate]").count() == 0
    page.goto(dashboard.url + "actions")
    assert page.locator("[data-testid=read-only-note]").count() == 1
    assert page.locator("form[data-testid^=action-]").count() == 0
    page.goto(dashboard.url + f"queues?dead={PARKED}")
    assert page.locator("[data-testid=purge], [data-testid=requeue-all]").count() == 0
    # When it posts anyway (its context sends the read-only token)
    refused = page.request.post(dashboard.url + "api/actions/purge", form={"queue": PARKED, "confirm": PARKED})
    assert refused.status == 403
    refused = page.request.post(dashboard.url + "api/actions/revoke", form={"task_id": sent.delayed.id})
    assert refused.status == 403
    # Then nothing happened
    assert fleet.broker.queue_depth(PARKED).ready == 1
    assert sent.delayed.state != "REVOKED"


def test_a_chained_tasks_page_shows_its_workflow_parent_and_children(fleet: Fleet, dashboard: DashboardProcess,
                                                                    open_page: OpenPage) -> None:
    # Given a chain of two tasks the fleet ran: add(1, 2) then add(3, 10)
    last = (tasks.add.s(1, 2) | tasks.add.s(10)).apply_async()
    assert last.get(timeout=20) == 13
    first = last.parent
    assert first is not None
    page = open_page(dashboard)

    # When the first task's page is shown, Then the next step is its child, and in its workflow, once the dashboard
    # has taken in the child's last event (its task-started can come in one read before its task-succeeded)
    def child_finished(p: Page) -> bool:
        child = p.locator("[data-testid=workflow-child]")
        return child.count() == 1 and "SUCCESS" in child.inner_text()

    reload_until(page, dashboard.url + f"tasks/{first.id}", child_finished, timeout_s=20)
    child = page.locator("[data-testid=workflow-child]")
    assert last.id in child.inner_text()
    assert "SUCCESS" in child.inner_text()
    assert any(last.id in m for m in page.locator("[data-testid=workflow-member]").all_inner_texts())

    # And the second task's page, one click away, names the first as its workflow's root
    page.locator(f"[data-testid=workflow-child] a[href$='tasks/{last.id}']").click()
    page.wait_for_url(f"**/tasks/{last.id}")
    assert page.locator("[data-testid=task-state]").inner_text() == "SUCCESS"
    members = page.locator("[data-testid=workflow-member]").all_inner_texts()
    assert any(first.id in m and m.startswith("root") for m in members), members
