"""Fixtures of the web app's specifications: the app on the stub broker (``memory://``), a fake history, and a
client factory for any settings."""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2, which the dev extra does not install
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from taskfleet import App
from taskfleet.dashboard.model import Bucket, TaskEntry, TaskEvent
from taskfleet.dashboard.settings import AuthSettings, BasicUser, DashboardSettings
from taskfleet.dashboard.web.app import create_app
from taskfleet.fleet.records import ChildState, PodInfo, WorkerRecord
from tests.unit.dashboard.fakes import FakeHistory, FakeKube

ADMIN_TOKEN = "admin-token-0123456789"
READ_TOKEN = "read-token-0123456789"
PASSWORD = "s3cret-pass"
#: A broker URL with a password: no page or API answer may show it.
SECRET_BROKER_PASSWORD = "brokerpw-DO-NOT-SHOW"

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def fleet_app() -> Iterator[App]:
    """An app on a fresh in-memory broker, with a queue holding a ready message and a dead letter."""
    app = App(f"web-{uuid.uuid4().hex[:8]}", broker="memory://", result_backend="memory://")
    broker = app.broker
    broker.enqueue("default", "m-ready", b"{}")
    broker.enqueue("mail", "m-dead", b"{}")
    [delivery] = broker.fetch(["mail"], max_messages=1, timeout_s=0.1)
    broker.dead_letter(delivery, "TypeError: boom")
    yield app
    app.close()


def heartbeat(app: App, *, worker_id: str = "w1@host", busy_task: str | None = "t-busy") -> None:
    """Put a live worker's heartbeat record in the app's fleet store, as a worker does."""
    now = time.time()
    children = (ChildState(slot=0, pid=101, task_id=busy_task, task="tests.add", since=now - 1),
                ChildState(slot=1, pid=102))
    record = WorkerRecord(id=worker_id, app=app.name, hostname="host", pid=100, queues=("default",),
                          concurrency=2, version="0", started_at=now - 60, sent_at=now, processed=5, failed=1,
                          children=children, pod=PodInfo(name="pod-1", namespace="jobs", uid="u"))
    store = app.control.store()
    try:
        store.heartbeat(worker_id, record.to_json(), ttl_s=30)
    finally:
        store.close()


def entries(n: int = 3) -> list[TaskEntry]:
    """``n`` tasks: t0 (oldest) .. t{n-1} (newest), alternately SUCCESS and FAILURE."""
    return [TaskEntry(task_id=f"t{i}", name="tests.add" if i % 2 == 0 else "tests.fail",
                      state="SUCCESS" if i % 2 == 0 else "FAILURE", queue="default", worker="w1@host",
                      args=f"({i}, 2)", kwargs="{}", result="3" if i % 2 == 0 else None,
                      exception=None if i % 2 == 0 else "ValueError('bad')",
                      traceback=None if i % 2 == 0 else "Traceback (most recent call last):\nValueError: bad",
                      first_seen_at=1000.0 + i, runtime_s=0.5) for i in range(n)]


@pytest.fixture
def history() -> FakeHistory:
    child = TaskEntry(task_id="c1", name="tests.child", parent_id="t0", root_id="t0", first_seen_at=999.0)
    return FakeHistory(
        entries=[*entries(3), child],
        events=[TaskEvent(task_id="t0", type="task-sent", timestamp=1000.0),
                TaskEvent(task_id="t0", type="task-succeeded", timestamp=1001.0, worker="w1@host")],
        bucket_rows=[Bucket(start=1000.0, succeeded=4, failed=1, p50_s=0.1, p95_s=0.4, p99_s=0.5)])


@pytest.fixture
def make_client(fleet_app: App, history: FakeHistory) -> ClientFactory:
    """``make_client(settings=..., kube=...)``: a TestClient of the dashboard (default: no auth, no prefix)."""
    def make(*, settings: DashboardSettings | None = None, kube: FakeKube | None = None,
             **client_options: Any) -> TestClient:
        web = create_app(app=fleet_app, history=history, kube=kube, settings=settings or DashboardSettings())
        return TestClient(web, **{"base_url": "http://127.0.0.1"} | client_options)
    return make


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


def auth_settings(**options: Any) -> DashboardSettings:
    """Settings with tokens and basic users (``alice`` admin, ``bob`` read-only), listening on all addresses."""
    auth = AuthSettings(admin_token=ADMIN_TOKEN, read_token=READ_TOKEN,
                        basic_users=(BasicUser(name="alice", password=PASSWORD, role="admin"),
                                     BasicUser(name="bob", password=PASSWORD, role="read-only")), **options)
    return DashboardSettings(host="0.0.0.0", auth=auth)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SAME_ORIGIN = {"Origin": "http://127.0.0.1"}
