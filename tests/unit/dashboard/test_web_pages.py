"""The HTML pages: each renders from the history and the broker, with the ids the browser tests look for; the
tasks page passes its filters on and links the next page; actions show for admins only."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from taskfleet import App
from taskfleet.dashboard.model import KubeEvent, ScaleSample, TaskQueueView
from tests.unit.dashboard.conftest import READ_TOKEN, ClientFactory, auth_settings, bearer, heartbeat
from tests.unit.dashboard.fakes import FakeHistory, FakeKube


@pytest.mark.parametrize(("path", "testid"), [
    ("/", "page-overview"), ("/queues", "page-queues"), ("/workers", "page-workers"), ("/tasks", "page-tasks"),
    ("/tasks/t1", "page-tasks"), ("/autoscaling", "page-autoscaling"), ("/actions", "page-actions")])
def test_every_page_renders(client: TestClient, path: str, testid: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert f'data-testid="{testid}"' in response.text


def test_the_overview_sums_the_buckets_and_holds_the_charts(client: TestClient) -> None:
    text = client.get("/").text
    assert re.search(r'data-testid="total-succeeded">4<', text)
    assert re.search(r'data-testid="total-failure-rate">20.0%<', text)
    for chart in ("chart-throughput", "chart-failure-rate", "chart-runtime"):
        assert f'id="{chart}"' in text


def test_the_overview_filters_by_task_name_and_queue(client: TestClient, history: FakeHistory) -> None:
    client.get("/", params={"name": "tests.add", "queue": "default"})
    totals = history.bucket_calls[0]
    assert (totals["name"], totals["queue"]) == ("tests.add", "default")


def test_the_queues_page_shows_counts_and_a_queues_dead_letters_with_reasons(client: TestClient) -> None:
    text = client.get("/queues", params={"dead": "mail"}).text
    assert 'data-testid="queue-row-mail"' in text
    assert "TypeError: boom" in text
    assert 'id="purge-confirm"' in text


def test_the_workers_page_shows_pod_busy_and_the_task_each_child_runs(client: TestClient, fleet_app: App) -> None:
    heartbeat(fleet_app)
    text = client.get("/workers").text
    assert "jobs/pod-1" in text
    assert "1/2" in text
    assert 'href="/tasks/t-busy"' in text


def test_the_tasks_page_passes_its_filters_and_links_the_next_page(client: TestClient,
                                                                  history: FakeHistory) -> None:
    text = client.get("/tasks", params={"name": "tests.add", "state": "SUCCESS", "text": "2", "limit": 1,
                                        "since": "1970-01-01T00:00:00"}).text
    query = history.queries[-1]
    assert (query.name, query.state, query.text, query.since, query.limit) == ("tests.add", "SUCCESS", "2", 0.0, 1)
    assert 'data-task-id="t2"' in text
    next_url = re.search(r'href="([^"]+)" id="next-page"', text)
    assert next_url is not None
    assert "before=t2" in next_url[1]
    assert "name=tests.add" in next_url[1]


def test_a_task_page_shows_args_result_traceback_and_timeline(client: TestClient) -> None:
    text = client.get("/tasks/t1").text
    assert "(1, 2)" in text
    assert "ValueError: bad" in text
    assert client.get("/tasks/t0").text.count('data-testid="timeline-row"') == 2


def test_an_unknown_task_page_is_404(client: TestClient) -> None:
    assert client.get("/tasks/nope").status_code == 404


def test_the_autoscaling_page_shows_taskqueues_conditions_and_events(make_client: ClientFactory,
                                                                    history: FakeHistory) -> None:
    kube = FakeKube(views=[TaskQueueView(namespace="jobs", name="mail", queues=["mail"], replicas=2, desired=3,
                                         ready_workers=2, min_replicas=0, max_replicas=5,
                                         conditions=[{"type": "Ready", "status": "True", "reason": "Scaled",
                                                      "message": "ok"}])],
                    kube_events={("jobs", "mail"): [KubeEvent(at=1.0, type="Normal", reason="ScaledUp",
                                                              message="scaled from 1 to 2")]})
    history.scale_rows = [ScaleSample(at=1.0, namespace="jobs", name="mail", replicas=2, desired=3)]
    client = make_client(kube=kube)
    text = client.get("/autoscaling").text
    assert 'data-name="jobs/mail"' in text
    assert "scaled from 1 to 2" in text
    assert "Scaled" in text
    [tq] = client.get("/api/autoscaling", params={"since": 0, "until": 10}).json()["task_queues"]
    assert tq["samples"][0]["replicas"] == 2
    assert tq["events"][0]["reason"] == "ScaledUp"


def test_without_kubernetes_the_autoscaling_page_says_so(client: TestClient) -> None:
    assert 'data-testid="autoscaling-off"' in client.get("/autoscaling").text


def test_a_read_only_user_sees_no_action_forms(make_client: ClientFactory) -> None:
    client = make_client(settings=auth_settings())
    assert 'data-testid="read-only-note"' in client.get("/actions", headers=bearer(READ_TOKEN)).text
    assert 'id="revoke-form"' not in client.get("/tasks/t0", headers=bearer(READ_TOKEN)).text


def test_a_task_offers_only_the_actions_its_state_allows(client: TestClient) -> None:
    # A task not yet received may be revoked, not terminated (no child runs it); a finished one offers neither
    waiting, finished = client.get("/tasks/c1").text, client.get("/tasks/t0").text
    assert 'id="revoke-form"' in waiting
    assert 'id="terminate-form"' not in waiting
    assert 'id="revoke-form"' not in finished
    assert 'id="terminate-form"' not in finished


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example/"])
def test_a_form_post_never_redirects_off_the_dashboard(client: TestClient, target: str) -> None:
    response = client.post("/api/actions/requeue", data={"queue": "mail", "next": target},
                           headers={"Origin": "http://127.0.0.1"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/?done=")


def test_a_form_post_redirects_back_with_what_was_done(client: TestClient, fleet_app: App) -> None:
    response = client.post("/api/actions/requeue", data={"queue": "mail", "next": "/queues?dead=mail"},
                           headers={"Origin": "http://127.0.0.1"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/queues?dead=mail&done=requeued+1")
    assert fleet_app.broker.queue_depth("mail").ready == 1


def test_purge_needs_the_queues_name_as_confirmation(client: TestClient, fleet_app: App) -> None:
    origin = {"Origin": "http://127.0.0.1"}
    assert client.post("/api/actions/purge", json={"queue": "default"}, headers=origin).status_code == 422
    assert fleet_app.broker.queue_depth("default").ready == 1
    assert client.post("/api/actions/purge", json={"queue": "default", "confirm": "default"},
                       headers=origin).json()["purged"] == 1


def test_pages_send_a_content_security_policy_that_allows_only_our_own_assets(client: TestClient) -> None:
    policy = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy


def test_the_overview_breaks_outcomes_down_per_task_name_and_per_queue(client: TestClient) -> None:
    text = client.get("/").text
    assert 'data-task="tests.add"' in text
    assert 'data-queue="default"' in text
    assert 'href="/?name=tests.add&amp;range_s=3600"' in text
