"""The JSON API: every route answers from the history and the broker, filters and the cursor pass through, and the
OpenAPI document lists the routes."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from taskfleet import App
from taskfleet.dashboard.model import TaskQuery
from tests.unit.dashboard.conftest import ClientFactory, heartbeat
from tests.unit.dashboard.fakes import FakeHistory


def test_tasks_come_newest_first_with_a_cursor_to_the_next_page(client: TestClient) -> None:
    first = client.get("/api/tasks", params={"limit": 2}).json()
    assert [t["task_id"] for t in first["tasks"]] == ["t2", "t1"]
    assert first["next_cursor"] == "t1"
    second = client.get("/api/tasks", params={"limit": 2, "before": first["next_cursor"]}).json()
    assert [t["task_id"] for t in second["tasks"]] == ["t0", "c1"]
    assert second["next_cursor"] is None


def test_every_filter_reaches_the_history_query(client: TestClient, history: FakeHistory) -> None:
    client.get("/api/tasks", params={"name": "tests.add", "state": "SUCCESS", "queue": "default",
                                     "worker": "w1@host", "task_id": "t", "text": "(2,", "since": 1.5,
                                     "until": 9e9, "limit": 7})
    assert history.queries[-1] == TaskQuery(name="tests.add", state="SUCCESS", queue="default", worker="w1@host",
                                            task_id="t", text="(2,", since=1.5, until=9e9, limit=7)


def test_an_unknown_state_is_refused(client: TestClient) -> None:
    assert client.get("/api/tasks", params={"state": "DONE"}).status_code == 422


def test_a_task_comes_with_its_timeline_and_children(client: TestClient) -> None:
    body = client.get("/api/tasks/t0").json()
    assert body["task"]["name"] == "tests.add"
    assert [e["type"] for e in body["timeline"]] == ["task-sent", "task-succeeded"]
    assert [c["task_id"] for c in body["children"]] == ["c1"]


def test_an_unknown_task_is_404(client: TestClient) -> None:
    assert client.get("/api/tasks/nope").status_code == 404


def test_stats_ask_the_history_for_buckets_over_the_range(client: TestClient, history: FakeHistory) -> None:
    body = client.get("/api/stats", params={"since": 0, "until": 3600, "name": "tests.add"}).json()
    assert body["buckets"][0]["succeeded"] == 4
    assert history.bucket_calls[-1] == {"since": 0.0, "until": 3600.0, "step_s": 30.0, "name": "tests.add",
                                        "queue": None}


def test_task_names_are_the_histories(client: TestClient) -> None:
    assert client.get("/api/task-names").json() == ["tests.add", "tests.child", "tests.fail"]


def test_queues_show_the_brokers_counts(client: TestClient) -> None:
    rows = {q["queue"]: q for q in client.get("/api/queues").json()}
    assert rows["default"]["ready"] == 1
    assert rows["mail"]["dead"] == 1


def test_dead_letters_carry_their_reason(client: TestClient) -> None:
    [letter] = client.get("/api/queues/mail/dead-letters").json()
    assert letter["message_id"] == "m-dead"
    assert letter["reason"] == "TypeError: boom"


def test_live_workers_show_pod_busy_children_and_their_tasks(client: TestClient, fleet_app: App) -> None:
    heartbeat(fleet_app)
    [worker] = client.get("/api/workers").json()
    assert worker["pod"] == "jobs/pod-1"
    assert (worker["busy"], worker["concurrency"]) == (1, 2)
    assert worker["children"][0]["task_id"] == "t-busy"


def test_a_worker_whose_record_expired_is_not_listed(client: TestClient, fleet_app: App) -> None:
    heartbeat(fleet_app)
    store = fleet_app.control.store()
    store.forget_worker("w1@host")
    store.close()
    assert client.get("/api/workers").json() == []


def test_autoscaling_says_when_kubernetes_is_off(client: TestClient) -> None:
    assert client.get("/api/autoscaling").json() == {"enabled": False, "task_queues": []}


def test_whoami_without_auth_is_the_local_admin(client: TestClient) -> None:
    assert client.get("/api/whoami").json()["role"] == "admin"


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/{task_id}", "/api/stats", "/api/task-names",
                                  "/api/queues", "/api/queues/{queue}/dead-letters", "/api/queue-samples",
                                  "/api/workers", "/api/autoscaling", "/api/whoami", "/api/actions/revoke",
                                  "/api/actions/rate-limit", "/api/actions/requeue", "/api/actions/purge",
                                  "/api/actions/pool-grow", "/api/actions/pool-shrink"])
def test_the_openapi_document_lists_every_api_route(client: TestClient, path: str) -> None:
    assert path in client.get("/api/openapi.json").json()["paths"]


def test_the_docs_pages_are_off_since_they_would_load_a_cdn(make_client: ClientFactory) -> None:
    client = make_client()
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
