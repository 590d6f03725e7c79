"""The browser harness itself: Debian's chromium, driven by Playwright without a browser download of its own, and
the request log the other tests assert on."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.support.browser import CHROMIUM, VIEWPORT, RequestLog, serve_html


@pytest.fixture
def local_site() -> Iterator[str]:
    """``/`` is a page that loads ``/asset.js`` from the same origin."""
    with serve_html("<html><body><h1>harness</h1><script src='/asset.js'></script></body></html>",
                    assets={"/asset.js": ("text/javascript", "document.body.dataset.loaded = 'yes';")}) as origin:
        yield origin


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
