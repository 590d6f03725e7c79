"""Fixtures of the dashboard's browser tests: one headless Chromium per session, and per module one real fleet (a
private Redis, a worker started with ``-E``, tasks sent with ``task_send_sent_event``) and one real
``taskfleet dashboard`` process in front of it, with a read-only and an admin token.

Chromium (Debian's, ``scripts/ensure-servers.sh``) missing: the tests skip on a laptop and fail in CI, like the broker
servers (``tests/support/servers.py``). Each page a test opens records the URLs it requested; a test fails when one
left the dashboard's origin (every asset is served by the dashboard itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page

from taskfleet import App
from taskfleet.brokers import Broker, connect
from taskfleet.settings import BrokerSettings
from tests.support.browser import ACTION_TIMEOUT_MS, VIEWPORT, RequestLog
from tests.support.dashboard import DashboardProcess
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

#: Where the screenshots go, and the variable that lets a run overwrite them (so ``make test`` leaves the tree clean).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"
UPDATE_SCREENSHOTS = "TASKFLEET_UPDATE_SCREENSHOTS"
#: The fleet's Redis databases on the session's server (other tests use 0 and 1).
BROKER_DB, BACKEND_DB = 4, 5
#: The queue the fleet's worker consumes (the test tasks' app's default).
QUEUE = "tests"

OpenPage = Callable[..., Page]


@dataclass
class Fleet:
    """What a module's tests act on and check against: the app (its control and sending), a broker of its own
    (the truth the pages are compared with) and the worker process."""

    app: App
    broker: Broker
    broker_url: str
    backend_url: str
    worker: WorkerProcess


@pytest.fixture(scope="module")
def fleet_urls(redis_server: RedisServer) -> tuple[str, str]:
    """The module's broker and result backend URLs: two databases of the session's Redis, flushed (a module on
    another broker overrides this fixture)."""
    redis_server.start()
    for db in (BROKER_DB, BACKEND_DB):
        with redis.Redis.from_url(f"{redis_server.url}/{db}") as client:
            client.flushdb()
    return f"{redis_server.url}/{BROKER_DB}", f"{redis_server.url}/{BACKEND_DB}"


@pytest.fixture(scope="module")
def fleet(fleet_urls: tuple[str, str]) -> Iterator[Fleet]:
    """The module's broker and result backend, the test tasks' app sending ``task-sent`` events, and one worker
    with ``-E`` and two children."""
    from tests import control_tasks

    broker_url, backend_url = fleet_urls
    app = control_tasks.app
    app.configure(broker=broker_url, result_backend=backend_url, task_send_sent_event=True)
    broker = connect(BrokerSettings(url=broker_url))
    worker = WorkerProcess(broker=broker_url, backend=backend_url, app="tests.control_tasks:app", queues=QUEUE,
                           concurrency=2, extra=["-E"]).wait_started()
    try:
        wait_for(lambda: bool(app.control.ping(timeout=0.5)), 20, message="the worker did not answer a ping")
        yield Fleet(app=app, broker=broker, broker_url=broker_url, backend_url=backend_url, worker=worker)
    finally:
        worker.stop()
        broker.close()
        app.configure(task_send_sent_event=False)
        app.close()


@pytest.fixture(scope="module")
def dashboard(fleet: Fleet) -> Iterator[DashboardProcess]:
    """``taskfleet dashboard`` as a real process on the fleet, with its own history file and both tokens."""
    process = DashboardProcess(broker=fleet.broker_url, backend=fleet.backend_url, app="tests.control_tasks:app")
    try:
        yield process.start()
    finally:
        process.stop()
        print(f"--- dashboard log:\n{process.log_text()[-3000:]}")


@pytest.fixture
def open_page(chromium: Browser) -> Iterator[OpenPage]:
    """Factory: ``open_page(dashboard, role="admin")`` is a new browser context (its own cookies) signed in with
    the role's token (``admin``, ``read-only``, or ``none``), at 1280x800. At the end, every request of every page
    must have gone to the dashboard's own origin (or ``origin=`` when a proxy is in front)."""
    opened: list[tuple[BrowserContext, RequestLog, str]] = []

    def open_(dashboard: DashboardProcess, *, role: str = "admin", origin: str | None = None) -> Page:
        tokens = {"admin": dashboard.admin_token, "read-only": dashboard.read_token}
        headers = {"Authorization": f"Bearer {tokens[role]}"} if role in tokens else {}  # "none": signed out
        context = chromium.new_context(viewport=VIEWPORT, extra_http_headers=headers)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        log = RequestLog()
        context.on("request", lambda request: log.urls.append(request.url))
        opened.append((context, log, origin or dashboard.origin))
        return context.new_page()

    yield open_
    for context, log, origin in opened:
        context.close()
        assert log.origins() <= {origin}, f"requests left the dashboard's origin {origin}: {sorted(log.origins())}"


def screenshot(page: Page, name: str) -> None:
    """Save ``page`` as docs/dashboard/``name``.png (1280x800) when ``TASKFLEET_UPDATE_SCREENSHOTS=1``; else nothing,
    so the tree stays clean."""
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
