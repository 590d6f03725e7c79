"""Behind a reverse proxy under a path prefix: every link, asset and API base in the pages carries it, and the
proxy's ``X-Forwarded-Prefix`` counts only when trusted."""

from __future__ import annotations

import re

import pytest

from taskfleet.dashboard.settings import DashboardSettings
from tests.unit.dashboard.conftest import ClientFactory

PAGES = ["/", "/queues", "/workers", "/tasks", "/tasks/t0", "/autoscaling", "/actions"]


def local_urls(html: str) -> list[str]:
    """Every href, src and action that points inside the dashboard (starts with '/')."""
    return [u for u in re.findall(r'(?:href|src|action)="([^"]*)"', html) if u.startswith("/")]


@pytest.mark.parametrize("page", PAGES)
def test_with_url_prefix_every_link_and_asset_carries_it(make_client: ClientFactory, page: str) -> None:
    client = make_client(settings=DashboardSettings(url_prefix="/taskfleet"))
    html = client.get(f"/taskfleet{page}").text
    urls = local_urls(html)
    assert urls
    assert all(u.startswith("/taskfleet/") for u in urls), [u for u in urls if not u.startswith("/taskfleet/")]
    assert 'data-base="/taskfleet"' in html


def test_the_assets_are_served_under_the_prefix(make_client: ClientFactory) -> None:
    client = make_client(settings=DashboardSettings(url_prefix="/taskfleet"))
    for asset in ("/static/dashboard.js", "/static/dashboard.css", "/static/vendor/uPlot.iife.min.js",
                  "/static/vendor/uPlot.min.css"):
        assert client.get(f"/taskfleet{asset}").status_code == 200
    assert client.get("/taskfleet/api/tasks").status_code == 200


def test_a_proxy_that_strips_the_prefix_is_served_too(make_client: ClientFactory) -> None:
    client = make_client(settings=DashboardSettings(url_prefix="/taskfleet"))
    html = client.get("/tasks").text
    assert 'href="/taskfleet/queues"' in html


def test_x_forwarded_prefix_is_honoured_only_when_trusted(make_client: ClientFactory) -> None:
    header = {"X-Forwarded-Prefix": "/ops/tf"}
    trusted = make_client(settings=DashboardSettings(trust_forwarded_headers=True))
    assert 'href="/ops/tf/queues"' in trusted.get("/tasks", headers=header).text
    untrusted = make_client()
    assert 'href="/queues"' in untrusted.get("/tasks", headers=header).text


def test_a_form_action_redirects_under_the_prefix(make_client: ClientFactory) -> None:
    client = make_client(settings=DashboardSettings(url_prefix="/taskfleet"))
    response = client.post("/taskfleet/api/actions/requeue", data={"queue": "mail", "next": "/queues"},
                           headers={"Origin": "http://127.0.0.1"}, follow_redirects=False)
    assert response.headers["location"].startswith("/taskfleet/queues?done=")


@pytest.mark.parametrize("prefix", ["taskfleet", "/taskfleet/"])
def test_a_malformed_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="url_prefix"):
        DashboardSettings(url_prefix=prefix)
