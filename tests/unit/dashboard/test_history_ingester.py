"""The history's ``Ingester`` on the in-memory broker: events read from the stream into the store with their cursor,
malformed ones skipped, queue depths sampled, and broker errors retried instead of stopping it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App
from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.dashboard import model
from taskfleet.dashboard.history import ingester as ingester_module
from taskfleet.dashboard.history.ingester import Ingester, scale_sample
from taskfleet.dashboard.history.settings import HistorySettings
from taskfleet.dashboard.history.store import HistoryStore
from taskfleet.errors import BrokerConnectionError
from tests.support.waiting import wait_for

T0 = 1_800_000_000.0


@pytest.fixture
def app() -> Iterator[App]:
    own = App("history-tests", broker="memory://", default_queue="work")
    yield own
    own.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    history = HistoryStore(HistorySettings(path=str(tmp_path / "h.db")))
    yield history
    history.close()


def emit(app: App, *events: dict[str, Any] | bytes) -> None:
    stream = connect_fleet_store(app.broker, namespace=app.name)
    try:
        stream.emit_events([e if isinstance(e, bytes) else json.dumps(e).encode() for e in events])
    finally:
        stream.close()


class FakeKube:
    def task_queues(self) -> list[model.TaskQueueView]:
        return [model.TaskQueueView(namespace="ns", name="tq", queues=["work"], replicas=2, desired=3,
                                    ready_workers=2, min_replicas=0, max_replicas=5,
                                    conditions=[{"type": "Scaling", "status": "True", "reason": "QueueBacklog",
                                                 "message": "12 ready"}])]

    def events(self, namespace: str, name: str, *, limit: int = 50) -> list[model.KubeEvent]:
        return []


def test_the_ingester_applies_events_skips_malformed_ones_and_samples_queues(app: App, store: HistoryStore) -> None:
    # Given a stream holding a malformed event between two good ones, and a queued message
    app.send("work.noop", queue="work")
    emit(app, {"type": "task-received", "timestamp": T0, "uuid": "t1", "name": "work.noop", "queue": "work",
               "worker": "w:1", "retries": 0},
         b"{not json", b"[1, 2]",
         {"type": "task-succeeded", "timestamp": T0 + 1, "uuid": "t1", "name": "work.noop", "queue": "work",
          "worker": "w:1", "runtime": 1.0})
    settings = HistorySettings(path=store.settings.path, sample_interval_s=0.1)
    # When the ingester runs, with a Kubernetes source
    ingester = Ingester(app, app.broker, store, settings, kube=FakeKube())
    ingester.start()
    try:
        wait_for(lambda: (store.task("t1") or model.TaskEntry(task_id="")).state == model.SUCCESS, 5)
        wait_for(lambda: bool(store.queue_samples(since=0, until=2**32, queue="work")), 5)
        wait_for(lambda: bool(store.scale_samples(since=0, until=2**32)), 5)
    finally:
        assert ingester.stop(timeout=5)
    # Then the good events are applied, the cursor saved, and the samples recorded
    assert [e.type for e in store.timeline("t1")] == ["task-received", "task-succeeded"]
    assert store.load_cursor() is not None
    assert store.queue_samples(since=0, until=2**32, queue="work")[0].ready == 1
    assert store.scale_samples(since=0, until=2**32)[0].reason == "QueueBacklog"


def test_a_failing_broker_is_retried_with_backoff_and_the_ingester_keeps_going(
        app: App, store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a fleet store whose first two connections fail
    failures = [BrokerConnectionError("down"), BrokerConnectionError("still down")]
    real = ingester_module.connect_fleet_store

    def flaky_connect(*args: Any, **kwargs: Any) -> FleetStore:
        if failures:
            raise failures.pop(0)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingester_module, "connect_fleet_store", flaky_connect)
    monkeypatch.setattr(ingester_module, "FIRST_BACKOFF_S", 0.05)
    emit(app, {"type": "task-sent", "timestamp": T0, "uuid": "t1", "name": "work.noop", "retries": 0})
    ingester = Ingester(app, app.broker, store, HistorySettings(path=store.settings.path))
    ingester.start()
    try:
        # Then, once the broker answers, the event is there
        wait_for(lambda: store.task("t1") is not None, 5)
    finally:
        assert ingester.stop(timeout=5)
    assert failures == []


def test_a_scale_sample_carries_the_last_conditions_reason() -> None:
    view = FakeKube().task_queues()[0]
    assert scale_sample(view, T0) == model.ScaleSample(at=T0, namespace="ns", name="tq", replicas=2, desired=3,
                                                       reason="QueueBacklog")
