"""Headless Chromium for the dashboard's browser tests: Debian's ``chromium``, driven by Playwright, which never
downloads a browser of its own (``executable_path``). Every page records the URLs it requested, so a test can assert
that nothing left the dashboard's origin (no CDN: clusters are often offline)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, ViewportSize

from tests.support.servers import ServerUnavailable
from tests.support.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
#: The page size of every test and screenshot, in CSS pixels.
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
#: Chromium's switches: headless, no sandbox (we run as root), and nothing that phones home on its own.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-dev-shm-usage")
#: How long a Playwright call waits for an element or a navigation, in milliseconds.
ACTION_TIMEOUT_MS = 10_000


def chromium_path() -> str:
    """Debian's chromium binary; ``ServerUnavailable`` when it is not installed (``scripts/ensure-servers.sh``)."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if not found:
        raise ServerUnavailable("chromium is not installed (apt-get install chromium; scripts/ensure-servers.sh)")
    return found


@dataclass
class RequestLog:
    """The URLs a browser context requested, in order."""

    urls: list[str] = field(default_factory=list)

    def origins(self) -> set[str]:
        """Each requested URL's ``scheme://host:port`` (``data:`` and ``blob:`` URLs are not requests)."""
        out = set()
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https", "ws", "wss"):
                out.add(f"{parts.scheme}://{parts.netloc}")
            elif parts.scheme not in ("data", "blob", "about"):
                out.add(url)
        return out


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """A Playwright ``Browser`` on Debian's chromium, closed afterwards. Playwright gives each launch a fresh
    temporary profile of its own (and refuses ``--user-data-dir`` in ``args``); its downloads folder is ours."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    downloads = tempfile.mkdtemp(prefix="taskfleet-chromium-")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=list(CHROMIUM_ARGS), downloads_path=downloads)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


def reload_until(page: Page, url: str, ready: Callable[[Page], bool], *, timeout_s: float = 15.0,
                 message: str = "") -> Page:
    """Open ``url`` again every half second until ``ready(page)`` holds (the history and the registry are
    eventually consistent: an event reaches the dashboard a moment after it happened); fail with ``message``."""

    def loaded() -> bool:
        page.goto(url)
        if ready(page):
            return True
        time.sleep(0.5)
        return False

    wait_for(loaded, timeout_s, interval=0.0, message=message or f"{url} never showed what the test waits for")
    return page


def cells(page: Page, row_selector: str) -> dict[str, str]:
    """The ``data-field`` cells of the one row ``row_selector`` matches, by field name, as shown."""
    row = page.locator(row_selector)
    fields = row.locator("[data-field]")
    return {fields.nth(i).get_attribute("data-field") or "": fields.nth(i).inner_text().strip()
            for i in range(fields.count())}


@contextmanager
def serve_html(html: str, *, assets: Mapping[str, tuple[str, str]] | None = None) -> Iterator[str]:
    """Serve ``html`` at ``/`` of a private HTTP server on 127.0.0.1 (another origin than the dashboard's, as a
    hostile site would be), and each of ``assets`` (path -> content type, text) at its path; yields its origin."""
    files = {"/": ("text/html; charset=utf-8", html)} | dict(assets or {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            content_type, text = files.get(self.path, files["/"])
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
