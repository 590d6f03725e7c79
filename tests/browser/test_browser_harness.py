"""The browser harness itself: Debian's chromium, driven by Playwright without a browser download of its own, and
the request log the other tests assert on."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser

from tests.support.browser import CHROMIUM, VIEWPORT, RequestLog


class _Page(BaseHTTPRequestHandler):
    """``/`` is a page that loads ``/asset.js`` from the same origin; anything else is a tiny script."""

    def do_GET(self) -> None:
        body = (b"<html><body><h1>harness</h1><script src='/asset.js'></script></body></html>" if self.path == "/"
                else b"document.body.dataset.loaded = 'yes';")
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if self.path == "/" else "text/javascript")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def local_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_browser_is_debians_chromium_not_a_playwright_download(chromium: Browser) -> None:
    assert os.path.exists(CHROMIUM)
    assert chromium.browser_type.name == "chromium"
    assert chromium.version.split(".")[0].isdigit()


def test_a_page_is_rendered_at_1280x800_and_its_requests_are_recorded(chromium: Browser, local_site: str) -> None:
    context = chromium.new_context(viewport=VIEWPORT)
    log = RequestLog()
    context.on("request", lambda request: log.urls.append(request.url))
    try:
        page = context.new_page()
        page.goto(local_site + "/")
        page.wait_for_function("document.body.dataset.loaded === 'yes'")
        assert page.inner_text("h1") == "harness"
        assert page.viewport_size == VIEWPORT
    finally:
        context.close()
    assert log.urls == [local_site + "/", local_site + "/asset.js"]
    assert log.origins() == {local_site}
