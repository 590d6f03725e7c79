"""The dashboard on the embedded SQLite broker (no server at all): the same pages show the same truths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import tasks
from tests.browser.conftest import QUEUE, Fleet, OpenPage
from tests.support.browser import reload_until
from tests.support.dashboard import DashboardProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet_urls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A SQLite broker file and a SQLite result backend file of the module's own."""
    folder: Path = tmp_path_factory.mktemp("sqlite-fleet")
    return f"sqlite:///{folder / 'broker.db'}", f"sqlite:///{folder / 'results.db'}"


def test_on_sqlite_the_workers_queues_and_a_finished_task_are_shown(fleet: Fleet, dashboard: DashboardProcess,
                                                                     open_page: OpenPage) -> None:
    result = tasks.add.delay(40, 2)
    delayed = tasks.add.apply_async((0, 0), countdown=60)
    assert result.get(timeout=15) == 42
    page = open_page(dashboard)
    [record] = fleet.app.control.workers()
    reload_until(page, dashboard.url + "workers",
                 lambda p: p.locator(f"[data-testid=worker-row][data-worker='{record.id}']").count() == 1)
    depth = fleet.broker.queue_depth(QUEUE)
    assert depth.delayed == 1
    reload_until(page, dashboard.url + "queues", lambda p: p.locator(
        f"[data-testid=queue-row-{QUEUE}] [data-field=delayed]").inner_text().strip() == str(depth.delayed))
    reload_until(page, dashboard.url + f"tasks/{result.id}",
                 lambda p: p.locator("[data-testid=task-state]").inner_text() == "SUCCESS")
    assert page.locator("[data-testid=task-result]").inner_text() == "42"
    reload_until(page, dashboard.url + f"tasks/{delayed.id}",
                 lambda p: p.locator("[data-testid=task-state]").inner_text() == "SENT")
