"""The dashboard's history filled from a real event stream on every broker: a worker started with ``-E`` and a
publisher with ``task_send_sent_event``, read by the ``Ingester`` into a ``HistoryStore`` (docs/dashboard.md,
"History")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskfleet import App
from taskfleet.dashboard import model
from taskfleet.dashboard.history.ingester import Ingester
from taskfleet.dashboard.history.settings import HistorySettings
from taskfleet.dashboard.history.store import HistoryStore
from tests import tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> HistorySettings:
    return HistorySettings(path=str(tmp_path / "history.db"), sample_interval_s=0.2)


@pytest.fixture
def reader_app(app: App, broker_url: str) -> Iterator[App]:
    """An app of the ingester's own (its broker connection is used from the ingester's thread only)."""
    own = App(app.name, broker=broker_url, broker_management_url=app.settings.broker_management_url)
    yield own
    own.close()


def start_ingester(reader_app: App, settings: HistorySettings) -> tuple[Ingester, HistoryStore]:
    store = HistoryStore(settings)
    ingester = Ingester(reader_app, reader_app.broker, store, settings)
    ingester.start()
    return ingester, store


def state_of(store: HistoryStore, task_id: str) -> str | None:
    entry = store.task(task_id)
    return None if entry is None else entry.state


def types(store: HistoryStore, task_id: str) -> list[str]:
    return [e.type for e in store.timeline(task_id)]


def test_the_ingester_fills_the_history_with_each_tasks_state_and_timeline(
        app: App, reader_app: App, settings: HistorySettings, start_worker: StartWorker, marker: str) -> None:
    # Given an ingester, a worker started with -E, and a publisher that sends task-sent
    ingester, store = start_ingester(reader_app, settings)
    try:
        start_worker(extra=["-E"])
        app.configure(task_send_sent_event=True)
        try:
            ok = tasks.add.delay(2, 3)
            failed = tasks.overdraw.delay(100)
            retried = tasks.flaky.delay(marker, 1)
        finally:
            app.configure(task_send_sent_event=False)
        assert ok.get(timeout=10) == 5
        assert retried.get(timeout=15) == "ok after 1 retries"
        # When the ingester has read their events
        wait_for(lambda: (state_of(store, ok.id), state_of(store, failed.id), state_of(store, retried.id)) == (
            model.SUCCESS, model.FAILURE, model.SUCCESS) and types(store, retried.id)[-1] == "task-succeeded",
            20, message="the history never caught up with the three tasks")
    finally:
        assert ingester.stop(timeout=10)
    try:
        # Then each task has its row and its timeline, from the publisher's task-sent to its end
        entry = store.task(ok.id)
        assert entry is not None
        assert (entry.name, entry.queue, entry.args, entry.result) == ("tests.add", "tests", "(2, 3)", "5")
        assert entry.worker is not None
        assert entry.runtime_s is not None
        assert entry.sent_at is not None
        assert types(store, ok.id) == ["task-sent", "task-received", "task-started", "task-succeeded"]
        failure = store.task(failed.id)
        assert failure is not None
        assert failure.exception is not None
        assert "InsufficientFunds" in failure.exception
        assert failure.traceback is not None
        retry = store.task(retried.id)
        assert retry is not None
        assert retry.retries == 1
        assert types(store, retried.id) == ["task-sent", "task-received", "task-started", "task-retried",
                                            "task-received", "task-started", "task-succeeded"]
        # And the filters, the text search and the buckets see them
        assert [t.task_id for t in store.tasks(model.TaskQuery(name="tests.add")).tasks] == [ok.id]
        assert [t.task_id for t in store.tasks(model.TaskQuery(state=model.FAILURE)).tasks] == [failed.id]
        assert [t.task_id for t in store.tasks(model.TaskQuery(text="(2, 3)")).tasks] == [ok.id]
        finished = entry.finished_at or 0.0
        buckets = store.buckets(since=finished - 120, until=finished + 60, step_s=180)
        assert sum(b.succeeded for b in buckets) == 2
        assert sum(b.failed for b in buckets) == 1
        assert sum(b.retried for b in buckets) == 1
        # And the queues were sampled
        assert any(s.queue == "tests" for s in store.queue_samples(since=0, until=finished + 3600))
    finally:
        store.close()


def test_a_restarted_ingester_continues_from_its_cursor_without_duplicates(
        app: App, reader_app: App, settings: HistorySettings, start_worker: StartWorker) -> None:
    # Given an ingester that read a first task's events, then stopped
    start_worker(extra=["-E"])
    first = tasks.add.delay(1, 1)
    assert first.get(timeout=10) == 2
    ingester, store = start_ingester(reader_app, settings)
    try:
        wait_for(lambda: types(store, first.id)[-1:] == ["task-succeeded"], 20, message="first task never seen")
    finally:
        assert ingester.stop(timeout=10)
        store.close()
    # When more tasks run while it is stopped, and it starts again on the same file
    more = [tasks.add.delay(i, i) for i in range(5)]
    assert [r.get(timeout=10) for r in more] == [0, 2, 4, 6, 8]
    ingester, store = start_ingester(reader_app, settings)
    try:
        wait_for(lambda: all(types(store, r.id)[-1:] == ["task-succeeded"] for r in more), 20,
                 message="the restarted ingester never caught up")
    finally:
        assert ingester.stop(timeout=10)
    # Then it read on from where it stopped: every task once, every event once
    try:
        for result in [first, *more]:
            assert types(store, result.id) == ["task-received", "task-started", "task-succeeded"]
        page = store.tasks(model.TaskQuery())
        assert sorted(t.task_id for t in page.tasks) == sorted(r.id for r in [first, *more])
        assert store.buckets(since=0, until=2**32, step_s=2**32)[0].succeeded == 6
    finally:
        store.close()
