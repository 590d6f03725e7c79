"""Each action of the dashboard, done by an admin in real Chromium, checked against the broker, the result backend
and the workers: revoke, rate limit, pool grow/shrink, requeue a dead letter, purge (confirmed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Page

from tests import control_tasks, tasks
from tests.browser.conftest import Fleet, OpenPage, screenshot
from tests.support.browser import reload_until
from tests.support.dashboard import DashboardProcess
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

#: A queue no worker consumes, for the dead-letter and purge tests.
PARKED = "parked-actions"
#: Seconds until the task the revoke test revokes is due: time for the dashboard to list it and the admin to click,
#: even on a busy machine.
REVOKED_DUE_S = 10


def accept_dialogs(page: Page) -> Page:
    """Answer yes to every confirm() the page asks (Playwright's default is no)."""
    page.on("dialog", lambda dialog: dialog.accept())
    return page


def test_a_revoked_delayed_task_is_revoked_and_never_runs(fleet: Fleet, dashboard: DashboardProcess,
                                                          open_page: OpenPage, tmp_path: Path) -> None:
    # Given a task due in a few seconds, listed by the dashboard
    marker = tmp_path / "ran.txt"
    result = tasks.record.apply_async((str(marker), "should not run"), countdown=REVOKED_DUE_S)
    page = accept_dialogs(open_page(dashboard))
    reload_until(page, dashboard.url + f"tasks/{result.id}",
                 lambda p: p.locator("[data-testid=revoke]").count() == 1)
    # When the admin revokes it from its page
    page.click("[data-testid=revoke]")
    assert "revoked" in page.locator("[data-testid=done]").inner_text()
    # Then it is REVOKED in the backend and on its page, and it never ran, even after its due time
    wait_for(lambda: result.state == "REVOKED", REVOKED_DUE_S + 15, message="the task was not revoked")
    reload_until(page, dashboard.url + f"tasks/{result.id}",
                 lambda p: p.locator("[data-testid=task-state]").inner_text() == "REVOKED")
    wait_for(lambda: fleet.broker.queue_depth("tests").delayed == 0, REVOKED_DUE_S + 15,
             message="the task stayed delayed")
    assert not marker.exists()


def test_terminating_a_running_task_kills_its_child_and_the_worker_goes_on(fleet: Fleet, dashboard: DashboardProcess,
                                                                           open_page: OpenPage, tmp_path: Path) -> None:
    # Given a task running for a long time, shown STARTED
    marker = tmp_path / "slow.txt"
    running = tasks.slow_record.delay(str(marker), 60.0)
    page = accept_dialogs(open_page(dashboard))
    reload_until(page, dashboard.url + f"tasks/{running.id}",
                 lambda p: p.locator("[data-testid=task-state]").inner_text() == "STARTED")
    # When the admin terminates it from its page
    page.click("[data-testid=terminate]")
    assert "terminated" in page.locator("[data-testid=done]").inner_text()
    # Then it ends REVOKED without finishing, and the worker runs the next task
    wait_for(lambda: running.state == "REVOKED", 15, message="the running task was not terminated")
    assert tasks.add.delay(1, 2).get(timeout=15) == 3
    assert [line.split()[0] for line in marker.read_text().splitlines()] == ["start"]
    reload_until(page, dashboard.url + f"tasks/{running.id}",
                 lambda p: p.locator("[data-testid=task-state]").inner_text() == "REVOKED")


def test_a_rate_limit_set_on_the_actions_page_is_in_force_on_the_workers(fleet: Fleet, dashboard: DashboardProcess,
                                                                        open_page: OpenPage) -> None:
    page = accept_dialogs(open_page(dashboard))
    page.goto(dashboard.url + "actions")
    screenshot(page, "actions")
    page.fill("[data-testid=rate-task-name]", control_tasks.unlimited.name)
    page.fill("[data-testid=rate-limit]", "3/s")
    page.click("[data-testid=rate-submit]")
    assert "3/s" in page.locator("[data-testid=done]").inner_text()
    [stats] = (fleet.app.control.inspect().stats() or {}).values()
    assert stats["rate_limits"][control_tasks.unlimited.name] == "3/s"
    # And an empty limit removes it
    page.fill("[data-testid=rate-task-name]", control_tasks.unlimited.name)
    page.fill("[data-testid=rate-limit]", "")
    page.click("[data-testid=rate-submit]")
    [stats] = (fleet.app.control.inspect().stats() or {}).values()
    assert control_tasks.unlimited.name not in stats["rate_limits"]


def concurrency(fleet: Fleet) -> int:
    [record] = fleet.app.control.workers()
    return record.concurrency


def test_growing_and_shrinking_the_pool_changes_the_workers_concurrency(fleet: Fleet, dashboard: DashboardProcess,
                                                                        open_page: OpenPage) -> None:
    before = concurrency(fleet)
    page = accept_dialogs(open_page(dashboard))
    page.goto(dashboard.url + "actions")
    page.fill("[data-testid=grow-n]", "2")
    page.click("[data-testid=grow-submit]")
    wait_for(lambda: concurrency(fleet) == before + 2, 15, message="the pool did not grow by 2")
    reload_until(page, dashboard.url + "workers",
                 lambda p: p.locator("[data-field=busy]").inner_text().endswith(f"/{before + 2}"))
    page.goto(dashboard.url + "actions")
    page.fill("[data-testid=shrink-n]", "2")
    page.click("[data-testid=shrink-submit]")
    wait_for(lambda: concurrency(fleet) == before, 15, message="the pool did not shrink back")


def test_a_requeued_dead_letter_is_back_in_its_queue(fleet: Fleet, dashboard: DashboardProcess,
                                                    open_page: OpenPage) -> None:
    # Given a dead letter on a queue no worker consumes
    result = tasks.add.apply_async((4, 4), queue=PARKED)
    [delivery] = fleet.broker.fetch([PARKED], max_messages=1, timeout_s=5)
    fleet.broker.dead_letter(delivery, "dead-lettered by the browser test")
    assert fleet.broker.queue_depth(PARKED).dead == 1
    # When the admin requeues it from the queue's dead letters
    page = accept_dialogs(open_page(dashboard))
    page.goto(dashboard.url + f"queues?dead={PARKED}")
    row = page.locator(f"[data-testid=dead-letter-row][data-message-id='{result.id}']")
    assert "dead-lettered by the browser test" in row.locator("[data-testid=dead-letter-reason]").inner_text()
    screenshot(page, "dead-letters")
    row.locator("[data-testid=requeue-one]").click()
    # Then it is ready again and no longer dead
    depth = fleet.broker.queue_depth(PARKED)
    assert (depth.ready, depth.dead) == (1, 0)
    assert page.locator("[data-testid=dead-letter-row]").count() == 0


def test_purge_asks_for_confirmation_and_then_empties_the_queue(fleet: Fleet, dashboard: DashboardProcess,
                                                                open_page: OpenPage) -> None:
    for i in range(3):
        tasks.add.apply_async((i, i), queue=PARKED)
    ready = fleet.broker.queue_depth(PARKED).ready
    assert ready >= 3
    page = open_page(dashboard)
    page.goto(dashboard.url + f"queues?dead={PARKED}")
    page.fill("[data-testid=purge-confirm]", PARKED)
    # When the admin says no to the confirmation, nothing is deleted
    answers: list[Dialog] = []

    def say_no(dialog: Dialog) -> None:
        answers.append(dialog)
        dialog.dismiss()

    page.once("dialog", say_no)
    page.click("[data-testid=purge]")
    assert answers, "purge did not ask for confirmation"
    assert fleet.broker.queue_depth(PARKED).ready == ready
    # When the name typed is wrong, the dashboard refuses
    refused = page.request.post(dashboard.url + "api/actions/purge", form={"queue": PARKED, "confirm": "tests"})
    assert refused.status == 422
    assert fleet.broker.queue_depth(PARKED).ready == ready
    # When the admin confirms, the queue is emptied
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=purge]")
    assert f"purged {ready}" in page.locator("[data-testid=done]").inner_text()
    assert fleet.broker.queue_depth(PARKED).ready == 0
