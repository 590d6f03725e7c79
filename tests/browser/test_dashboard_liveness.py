"""The dashboard as it lives in a cluster: a worker killed with SIGKILL leaves the Workers page by itself, the
dashboard works under a path prefix behind a real reverse proxy (nginx), and a browser signs in with the login form.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser

from tests import tasks
from tests.browser.conftest import QUEUE, Fleet, OpenPage
from tests.support.browser import VIEWPORT, reload_until, serve_html
from tests.support.dashboard import DashboardProcess, NginxProxy
from tests.support.servers import ServerUnavailable, require_server
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, children_of

pytestmark = pytest.mark.integration

PREFIX = "/ops/taskfleet"
#: The pages of the navigation bar, by their path under the dashboard's root.
PAGES = ("", "queues", "workers", "tasks", "autoscaling", "actions")


def test_a_worker_killed_with_sigkill_leaves_the_workers_page_by_itself(fleet: Fleet, dashboard: DashboardProcess,
                                                                        open_page: OpenPage) -> None:
    # Given a second worker, listed
    doomed = WorkerProcess(broker=fleet.broker_url, backend=fleet.backend_url, app="tests.control_tasks:app",
                           queues=QUEUE, concurrency=1, extra=["-E"]).wait_started()
    try:
        wait_for(lambda: len(fleet.app.control.workers()) == 2, 20, message="the second worker never registered")
        [doomed_id] = {r.id for r in fleet.app.control.workers() if r.pid == doomed.pid}
        page = reload_until(open_page(dashboard), dashboard.url + "workers",
                            lambda p: p.locator(f"[data-worker='{doomed_id}']").count() == 1)
        # When it is killed with SIGKILL, children first-hand too (no goodbye, no heartbeat)
        for pid in [doomed.pid, *children_of(doomed.pid)]:
            os.kill(pid, signal.SIGKILL)
        # Then the open page drops it by itself, without a reload, and keeps the live worker
        row = page.locator(f"[data-worker='{doomed_id}']")
        row.wait_for(state="detached", timeout=20_000)
        assert page.locator("[data-testid=worker-row]").count() == 1
        assert doomed_id not in {r.id for r in fleet.app.control.workers()}
    finally:
        doomed.stop()


@pytest.fixture(scope="module", params=["url-prefix", "forwarded-prefix"])
def behind_nginx(request: pytest.FixtureRequest, fleet: Fleet) -> Iterator[tuple[DashboardProcess, NginxProxy]]:
    """A second dashboard reached only through nginx under ``PREFIX``: told the prefix with ``--url-prefix`` (nginx
    passes the path on), or trusting nginx's ``X-Forwarded-Prefix`` (nginx strips the prefix)."""
    forwarded = request.param == "forwarded-prefix"
    process = DashboardProcess(broker=fleet.broker_url, backend=fleet.backend_url, app="tests.control_tasks:app",
                               url_prefix="" if forwarded else PREFIX,
                               extra=["--trust-proxy-headers"] if forwarded else [])
    try:
        process.start()
        try:
            proxy = NginxProxy(upstream_port=process.port, prefix=PREFIX, strip_prefix=forwarded)
        except ServerUnavailable as exc:
            require_server(str(exc))
        try:
            yield process, proxy
        finally:
            proxy.close()
    finally:
        process.stop()


def test_every_page_asset_and_api_call_stays_under_the_path_prefix(fleet: Fleet,
                                                                    behind_nginx: tuple[DashboardProcess, NginxProxy],
                                                                    open_page: OpenPage) -> None:
    process, proxy = behind_nginx
    result = tasks.add.delay(20, 22)
    assert result.get(timeout=15) == 42
    page = open_page(process, origin=proxy.origin)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    root = f"{proxy.origin}{PREFIX}/"
    for path in PAGES:
        response = page.goto(root + path)
        assert response is not None
        assert response.ok, f"{root + path}: {response.status}"
        page.wait_for_load_state("networkidle")
    # The navigation bar's links lead under the prefix, and a task's page is reached through them
    page.goto(root + "tasks")
    hrefs = page.locator("[data-testid=nav] a").evaluate_all("links => links.map(a => a.href)")
    assert hrefs
    assert all(h.startswith(root) for h in hrefs), hrefs
    reload_until(page, root + f"tasks?task_id={result.id}",
                 lambda p: p.locator("[data-testid=task-link]").count() == 1)
    page.click("[data-testid=task-link]")
    assert page.url == root + f"tasks/{result.id}"
    assert page.locator("[data-testid=task-result]").inner_text() == "42"
    # And every request went through the proxy, under the prefix (pages, assets, API calls)
    assert urls
    outside = [u for u in urls if not urlsplit(u).path.startswith(PREFIX + "/")]
    assert not outside, outside
    assert any("/static/" in u for u in urls)


def test_a_browser_signs_in_with_the_login_form_and_gets_its_role(dashboard: DashboardProcess,
                                                                  open_page: OpenPage) -> None:
    page = open_page(dashboard, role="none")
    page.goto(dashboard.url + "workers")
    assert "/login" in page.url
    page.fill("input[name=token]", dashboard.read_token)
    page.locator("form button[type=submit], form input[type=submit]").first.click()
    page.goto(dashboard.url + "workers")
    assert page.locator("[data-testid=who]").get_attribute("data-role") == "read-only"


def test_a_page_on_another_origin_cannot_make_a_signed_in_browser_act(chromium: Browser, fleet: Fleet,
                                                                      dashboard: DashboardProcess) -> None:
    # Given an admin signed in with the login form (a cookie session) and a queue with a message
    queue = "parked-csrf"
    tasks.add.apply_async((1, 1), queue=queue)
    assert fleet.broker.queue_depth(queue).ready == 1
    context = chromium.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(dashboard.url + "login")
        page.fill("input[name=token]", dashboard.admin_token)
        page.locator("form button[type=submit], form input[type=submit]").first.click()
        page.goto(dashboard.url + "actions")
        assert page.locator("[data-testid=who]").get_attribute("data-role") == "admin"
        # When a page elsewhere submits a purge form to the dashboard in the same browser
        hostile = (f"<form method=post action='{dashboard.url}api/actions/purge'>"
                   f"<input name=queue value={queue}><input name=confirm value={queue}></form>"
                   "<script>document.forms[0].submit()</script>")
        with serve_html(hostile) as elsewhere:
            with page.expect_response(dashboard.url + "api/actions/purge") as answer:
                page.goto(elsewhere + "/")
            # Then the dashboard refuses it and the queue keeps its message
            assert answer.value.status == 403
        assert fleet.broker.queue_depth(queue).ready == 1
        # While the same session may act from the dashboard's own page
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(dashboard.url + f"queues?dead={queue}")
        page.fill("[data-testid=purge-confirm]", queue)
        page.click("[data-testid=purge]")
        assert "purged 1" in page.locator("[data-testid=done]").inner_text()
        assert fleet.broker.queue_depth(queue).ready == 0
    finally:
        context.close()
