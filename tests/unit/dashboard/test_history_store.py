"""The dashboard's history (``taskfleet.dashboard.history``): task rows folded from events whatever order they
arrive in, timelines, workflows, every filter and keyset pages, outcome buckets with percentiles, retention, and the
event stream's cursor saved with its batch."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet.dashboard import model
from taskfleet.dashboard.history import histogram
from taskfleet.dashboard.history.settings import HistorySettings
from taskfleet.dashboard.history.store import HistoryError, HistoryStore
from taskfleet.errors import ConfigurationError

T0 = 1_800_000_000.0  # a fixed moment (Unix seconds), minute-aligned
_ids = itertools.count()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    history = HistoryStore(HistorySettings(path=str(tmp_path / "history.db")))
    yield history
    history.close()


def ev(kind: str, task_id: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "timestamp": at, "uuid": task_id, **fields}


def run(task_id: str, at: float, *, name: str = "app.add", queue: str = "default", worker: str = "w1:1",
        runtime: float = 0.01, args: str = "(1, 2)", end: str = "task-succeeded", **extra: Any) -> list[dict[str, Any]]:
    """A task's worker events: received (with ``extra``), started and its end (with ``exception`` and
    ``traceback`` when given)."""
    common = {"name": name, "queue": queue, "worker": worker}
    end_fields: dict[str, Any] = {"runtime": runtime, "result": "3"} if end == "task-succeeded" else {}
    end_fields.update({k: extra.pop(k) for k in ("exception", "traceback") if k in extra})
    if end == "task-failed":
        end_fields["runtime"] = runtime
    return [ev("task-received", task_id, at, **common, args=args, kwargs="{}", retries=0, **extra),
            ev("task-started", task_id, at, **common),
            ev(end, task_id, at + runtime, **common, **end_fields)]


def new_id() -> str:
    return f"task-{next(_ids):06d}"


def test_a_task_row_follows_its_events_whatever_order_they_arrive_in(store: HistoryStore) -> None:
    # Given a task's events, its task-sent last (the publisher's batch was slower than the worker's)
    sent = ev("task-sent", "t1", T0, name="app.add", queue="default", args="(1, 2)", kwargs="{}", retries=0)
    store.apply_events([*run("t1", T0 + 1, runtime=0.5), sent])
    # Then the late task-sent does not overwrite SUCCESS, and it is the task's first event
    task = store.task("t1")
    assert task is not None
    assert (task.state, task.name, task.queue, task.worker, task.result) == (
        model.SUCCESS, "app.add", "default", "w1:1", "3")
    assert (task.sent_at, task.received_at, task.finished_at, task.runtime_s) == (T0, T0 + 1, T0 + 1.5, 0.5)
    assert task.first_seen_at == T0
    assert [e.type for e in store.timeline("t1")] == [
        "task-sent", "task-received", "task-started", "task-succeeded"]
    # And it moved back in the history's order, its text index with it
    assert ids(store, until=T0) == ["t1"]
    assert ids(store, text="(1, 2)") == ["t1"]


def test_a_task_sent_that_comes_a_batch_later_moves_the_task_back_to_its_first_event(store: HistoryStore) -> None:
    store.apply_events(run("t1", T0 + 10))
    store.apply_events(run("t2", T0 + 5))
    store.apply_events([ev("task-sent", "t1", T0, name="app.add", args="(1, 2)", kwargs="{}", retries=0)])
    assert ids(store) == ["t2", "t1"]
    assert ids(store, until=T0 + 1) == ["t1"]
    assert ids(store, text="(1, 2)") == ["t2", "t1"]
    task = store.task("t1")
    assert task is not None
    assert (task.state, task.first_seen_at) == (model.SUCCESS, T0)


def test_an_end_that_arrives_before_its_start_still_wins(store: HistoryStore) -> None:
    received, started, succeeded = run("t1", T0)
    store.apply_events([succeeded])
    store.apply_events([started, received])
    task = store.task("t1")
    assert task is not None
    assert task.state == model.SUCCESS
    assert task.args == "(1, 2)"


def test_a_retried_task_keeps_its_id_and_counts_its_retries(store: HistoryStore) -> None:
    # Given a task that failed its first attempt with a retry, then succeeded on the second
    first = run("t1", T0, end="task-retried", exception="TimeoutError: slow")
    second = [ev("task-received", "t1", T0 + 5, name="app.add", queue="default", worker="w2:2", retries=1),
              ev("task-started", "t1", T0 + 5, name="app.add", queue="default", worker="w2:2"),
              ev("task-succeeded", "t1", T0 + 6, name="app.add", queue="default", worker="w2:2", runtime=1.0)]
    store.apply_events(first)
    retrying = store.task("t1")
    assert retrying is not None
    assert (retrying.state, retrying.retries) == (model.RETRY, 1)
    assert retrying.exception == "TimeoutError: slow"
    store.apply_events(second)
    # Then one row, its latest attempt's state and worker, and every event in its timeline
    task = store.task("t1")
    assert task is not None
    assert (task.state, task.retries, task.worker, task.exception) == (model.SUCCESS, 1, "w2:2", None)
    timeline = store.timeline("t1")
    assert [(e.type, e.retries) for e in timeline] == [
        ("task-received", 0), ("task-started", 0), ("task-retried", 0),
        ("task-received", 1), ("task-started", 1), ("task-succeeded", 1)]
    assert timeline[2].detail == "TimeoutError: slow"
    assert store.tasks(model.TaskQuery()).tasks == [task]


def test_a_retry_that_arrives_after_the_next_attempts_received_does_not_count_twice(store: HistoryStore) -> None:
    # Given the second attempt's child sent its events before the first attempt's child sent task-retried
    received, started, retried = run("t1", T0, end="task-retried", exception="OSError: flake")
    store.apply_events([received, started])
    store.apply_events([ev("task-received", "t1", T0 + 1, name="app.add", worker="w2:2", retries=1),
                        ev("task-started", "t1", T0 + 1, name="app.add", worker="w2:2")])
    store.apply_events([retried])
    # Then the task is in its second attempt, retried once
    task = store.task("t1")
    assert task is not None
    assert (task.state, task.retries, task.worker) == (model.STARTED, 1, "w2:2")


def test_the_next_attempts_start_wins_over_a_retry_even_before_its_received_arrives(store: HistoryStore) -> None:
    store.apply_events(run("t1", T0, end="task-retried"))
    store.apply_events([ev("task-started", "t1", T0 + 5, name="app.add", worker="w2:2")])
    task = store.task("t1")
    assert task is not None
    assert (task.state, task.worker) == (model.STARTED, "w2:2")


def test_a_failure_keeps_its_exception_and_traceback(store: HistoryStore) -> None:
    trace = "Traceback (most recent call last):\n  ...\nValueError: bad\n"
    store.apply_events(run("t1", T0, end="task-failed", exception="ValueError: bad", traceback=trace, runtime=0.2))
    task = store.task("t1")
    assert task is not None
    assert (task.state, task.exception, task.traceback) == (model.FAILURE, "ValueError: bad", trace)
    assert store.timeline("t1")[-1].detail == "ValueError: bad"


def test_revoked_and_dead_lettered_tasks_say_why(store: HistoryStore) -> None:
    store.apply_events([ev("task-received", "r1", T0, name="app.add", worker="w1:1", retries=0),
                        ev("task-revoked", "r1", T0, name="app.add", worker="w1:1", reason="expired", expired=True),
                        ev("task-dead-lettered", "d1", T0, name="app.nope", worker="w1:1",
                           reason="task 'app.nope' is not registered")])
    revoked, dead = store.task("r1"), store.task("d1")
    assert revoked is not None
    assert (revoked.state, revoked.exception) == (model.REVOKED, "expired")
    assert dead is not None
    assert dead.state == model.DEAD_LETTERED
    assert dead.exception == "task 'app.nope' is not registered"
    assert store.timeline("d1")[0].detail == "task 'app.nope' is not registered"


def test_worker_events_and_malformed_events_are_skipped(store: HistoryStore) -> None:
    store.apply_events([{"type": "worker-heartbeat", "timestamp": T0, "worker": "w1:1"},
                        {"type": "task-started", "timestamp": "soon", "uuid": "bad"},
                        {"type": "task-started", "timestamp": T0},
                        {"type": "task-exploded", "timestamp": T0, "uuid": "x"},
                        *run("ok", T0)])
    assert [t.task_id for t in store.tasks(model.TaskQuery()).tasks] == ["ok"]


def test_an_event_applied_twice_is_kept_and_counted_once(store: HistoryStore) -> None:
    events = run("t1", T0)
    store.apply_events(events)
    store.apply_events(events)
    assert len(store.timeline("t1")) == 3
    assert sum(b.succeeded for b in store.buckets(since=T0, until=T0 + 60, step_s=60)) == 1


def test_children_and_workflow_follow_parent_and_root_ids(store: HistoryStore) -> None:
    # Given a root task that started two children, one of which started a grandchild
    store.apply_events([
        *run("root", T0, root_id="root"),
        *run("c1", T0 + 1, root_id="root", parent_id="root"),
        *run("c2", T0 + 2, root_id="root", parent_id="root"),
        *run("g1", T0 + 3, root_id="root", parent_id="c1"),
        *run("other", T0 + 4, root_id="other"),
    ])
    assert [t.task_id for t in store.children("root")] == ["c1", "c2"]
    assert [t.task_id for t in store.children("c1")] == ["g1"]
    assert [t.task_id for t in store.workflow("root")] == ["root", "c1", "c2", "g1"]
    assert [t.task_id for t in store.workflow("root", limit=2)] == ["root", "c1"]


@pytest.fixture
def varied(store: HistoryStore) -> HistoryStore:
    """Six tasks, one a second from T0, of two names, two queues and two workers, with various ends."""
    store.apply_events([
        *run("a-1", T0, name="app.add", queue="fast", worker="w1:1", args="(1, 'alice')"),
        *run("a-2", T0 + 1, name="app.add", queue="fast", worker="w2:2", args="(2, 'bob')", end="task-failed"),
        *run("b-3", T0 + 2, name="app.mail", queue="slow", worker="w1:1", args="('carol@example.com',)"),
        *run("b-4", T0 + 3, name="app.mail", queue="slow", worker="w2:2", args="('dave@example.com',)",
             end="task-failed"),
        *run("a-5", T0 + 4, name="app.add", queue="slow", worker="w1:1", args="(5, 'alice')"),
        *run("b-6", T0 + 5, name="app.mail", queue="fast", worker="w2:2", args="('Alice@example.com',)"),
    ])
    return store


def ids(store: HistoryStore, **query: Any) -> list[str]:
    return [t.task_id for t in store.tasks(model.TaskQuery(**query)).tasks]


def test_every_filter_narrows_the_page_and_it_stays_newest_first(varied: HistoryStore) -> None:
    assert ids(varied) == ["b-6", "a-5", "b-4", "b-3", "a-2", "a-1"]
    assert ids(varied, name="app.add") == ["a-5", "a-2", "a-1"]
    assert ids(varied, state=model.FAILURE) == ["b-4", "a-2"]
    assert ids(varied, queue="fast") == ["b-6", "a-2", "a-1"]
    assert ids(varied, worker="w1:1") == ["a-5", "b-3", "a-1"]
    assert ids(varied, name="app.mail", state=model.SUCCESS) == ["b-6", "b-3"]
    assert ids(varied, queue="slow", state=model.FAILURE) == ["b-4"]
    assert ids(varied, task_id="a-") == ["a-5", "a-2", "a-1"]
    assert ids(varied, since=T0 + 1, until=T0 + 3) == ["b-4", "b-3", "a-2"]
    assert ids(varied, name="nothing") == []


def test_text_search_finds_words_inside_args_whatever_their_case(varied: HistoryStore) -> None:
    assert ids(varied, text="alice") == ["b-6", "a-5", "a-1"]
    assert ids(varied, text="@example.com") == ["b-6", "b-4", "b-3"]
    assert ids(varied, text="alice", name="app.add") == ["a-5", "a-1"]
    assert ids(varied, text="'bob'") == ["a-2"]
    assert ids(varied, text="5,") == ["a-5"]  # shorter than a trigram: looked for in the newest tasks
    assert ids(varied, text='"quoted" OR stuff') == []  # the text is a phrase, never a query expression


def test_keyset_pages_walk_the_whole_history_once(varied: HistoryStore) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        page = varied.tasks(model.TaskQuery(limit=4, before=cursor))
        seen += [t.task_id for t in page.tasks]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert (seen, pages) == (["b-6", "a-5", "b-4", "b-3", "a-2", "a-1"], 2)
    filtered = varied.tasks(model.TaskQuery(limit=1, text="alice"))
    assert [t.task_id for t in varied.tasks(model.TaskQuery(limit=5, text="alice",
                                                            before=filtered.next_cursor)).tasks] == ["a-5", "a-1"]


def test_tasks_first_seen_in_the_same_microsecond_all_get_their_own_place(store: HistoryStore) -> None:
    store.apply_events([ev("task-sent", f"same-{i}", T0, name="app.add", retries=0) for i in range(1100)])
    page, seen = store.tasks(model.TaskQuery(limit=1000)), 0
    seen += len(page.tasks)
    rest = store.tasks(model.TaskQuery(limit=1000, before=page.next_cursor))
    assert seen + len(rest.tasks) == 1100
    assert rest.next_cursor is None


def test_task_names_lists_each_name_once(varied: HistoryStore) -> None:
    assert varied.task_names() == ["app.add", "app.mail"]


def test_buckets_count_outcomes_per_step_with_runtime_percentiles(store: HistoryStore) -> None:
    # Given 100 runs of app.add in the first minute (10 ms to 1 s), 2 failures in the third, on queue q1
    events: list[dict[str, Any]] = []
    for i in range(100):
        events += run(new_id(), T0 + i * 0.5, runtime=0.01 * (i + 1), queue="q1")
    events += run(new_id(), T0 + 130, end="task-failed", queue="q1")
    events += run(new_id(), T0 + 131, end="task-retried", queue="q1")
    events += run(new_id(), T0 + 10, name="app.mail", queue="q2", runtime=5.0)
    store.apply_events(events)
    # When bucketed by minute over 3 minutes, for app.add
    buckets = store.buckets(since=T0, until=T0 + 180, step_s=60, name="app.add")
    assert [(b.start, b.succeeded, b.failed, b.retried) for b in buckets] == [
        (T0, 100, 0, 0), (T0 + 60, 0, 0, 0), (T0 + 120, 0, 1, 1)]
    # Then the percentiles come from the histogram, within a bin's width (19%) of the true values
    first = buckets[0]
    assert first.p50_s is not None
    assert first.p95_s is not None
    assert first.p99_s is not None
    assert 0.50 / 1.2 <= first.p50_s <= 0.50 * 1.2
    assert 0.95 / 1.2 <= first.p95_s <= 0.95 * 1.2
    assert 0.99 / 1.2 <= first.p99_s <= 0.99 * 1.2
    assert buckets[1].p50_s is None
    # And the same rows roll up per queue, over everything, and into wider steps
    everything = store.buckets(since=T0, until=T0 + 180, step_s=180)
    assert [(b.succeeded, b.failed, b.retried) for b in everything] == [(101, 1, 1)]
    assert [b.succeeded for b in store.buckets(since=T0, until=T0 + 60, step_s=60, queue="q2")] == [1]
    both = store.buckets(since=T0, until=T0 + 60, step_s=60, name="app.mail", queue="q2")
    assert both[0].p50_s is not None
    assert 5.0 / 1.2 <= both[0].p50_s <= 5.0 * 1.2


def test_histogram_percentiles_are_the_middle_of_the_bin_they_fall_in() -> None:
    counts: dict[int, int] = {}
    for runtime in (0.001, 0.002, 0.004, 1.0):
        b = histogram.bin_of(runtime)
        counts[b] = counts.get(b, 0) + 1
    assert histogram.counts_of(histogram.unpack_int(histogram.pack(counts))) == counts
    assert histogram.pack({}) == b""
    assert histogram.counts_of(histogram.unpack_int(histogram.pack({histogram.BINS - 1: 2**39}))) == {
        histogram.BINS - 1: 2**39}
    p50, p100 = histogram.percentiles(counts, (0.5, 1.0))
    assert p50 is not None
    assert 0.002 / 1.2 <= p50 <= 0.002 * 1.2
    assert p100 is not None
    assert 1 / 1.2 <= p100 <= 1.2
    assert histogram.percentiles({}, (0.5,)) == [None]
    assert histogram.percentiles_of(histogram.as_int(counts), (0.5, 1.0)) == [p50, p100]
    assert histogram.percentiles_of(0, (0.5,)) == [None]
    assert histogram.bin_of(0.0) == 0
    assert histogram.bin_of(1e9) == histogram.BINS - 1


def test_queue_and_scale_samples_are_kept_and_read_back_by_time(store: HistoryStore) -> None:
    store.record_queue_samples([model.QueueSample(at=T0, queue="q1", ready=3, in_flight=1, delayed=0, dead=2),
                                model.QueueSample(at=T0, queue="q2", ready=0, in_flight=None, delayed=None, dead=0),
                                model.QueueSample(at=T0 + 5, queue="q1", ready=1, in_flight=0, delayed=0, dead=2)])
    store.record_scale_samples([model.ScaleSample(at=T0, namespace="ns", name="tq", replicas=2, desired=3,
                                                  reason="ScalingUp")])
    assert [s.ready for s in store.queue_samples(since=T0, until=T0 + 10, queue="q1")] == [3, 1]
    assert len(store.queue_samples(since=T0, until=T0)) == 2
    assert store.scale_samples(since=T0, until=T0 + 1, namespace="ns", name="tq") == [
        model.ScaleSample(at=T0, namespace="ns", name="tq", replicas=2, desired=3, reason="ScalingUp")]


def test_prune_drops_tasks_timelines_and_samples_older_than_the_retention(tmp_path: Path) -> None:
    store = HistoryStore(HistorySettings(path=str(tmp_path / "h.db"), retention_s=3600))
    try:
        store.apply_events([*run("old", T0, args="(1, 'findme')"), *run("new", T0 + 3000, args="(2, 'findme')")])
        store.record_queue_samples([model.QueueSample(at=T0, queue="q", ready=1, in_flight=0, delayed=0, dead=0)])
        assert store.prune(now=T0 + 3700) == 1
        assert store.task("old") is None
        assert store.timeline("old") == []
        assert ids(store) == ["new"]
        assert ids(store, text="findme") == ["new"]
        assert store.queue_samples(since=0, until=T0 + 3700) == []
        assert sum(b.succeeded for b in store.buckets(since=T0, until=T0 + 3600, step_s=3600)) == 1
    finally:
        store.close()


def test_prune_keeps_at_most_max_tasks_the_newest(tmp_path: Path) -> None:
    store = HistoryStore(HistorySettings(path=str(tmp_path / "h.db"), max_tasks=3))
    try:
        store.apply_events([e for i in range(5) for e in run(f"t{i}", T0 + i)])
        assert store.prune(now=T0 + 10) == 2
        assert ids(store) == ["t4", "t3", "t2"]
        assert store.prune(now=T0 + 10) == 0
    finally:
        store.close()


def test_the_cursor_is_saved_with_its_batch_and_survives_a_reopen(tmp_path: Path) -> None:
    settings = HistorySettings(path=str(tmp_path / "h.db"))
    store = HistoryStore(settings)
    assert store.load_cursor() is None
    store.apply_events(run("t1", T0), cursor="1-0")
    store.save_cursor("2-0")
    store.close()
    reopened = HistoryStore(settings)
    try:
        assert reopened.load_cursor() == "2-0"
        assert reopened.task("t1") is not None
    finally:
        reopened.close()


def test_a_batch_that_fails_leaves_neither_its_rows_nor_its_cursor(store: HistoryStore,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from taskfleet.dashboard.history import writer

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writer, "_write_outcomes", broken)
    with pytest.raises(RuntimeError):
        store.apply_events(run("t1", T0), cursor="5-0")
    assert store.task("t1") is None
    assert store.load_cursor() is None


def test_settings_are_keyword_only_checked_and_unknown_ones_raise() -> None:
    assert HistorySettings(path="h.db").retention_s == 7 * 24 * 3600
    with pytest.raises(TypeError):
        HistorySettings(path="h.db", retention_days=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        HistorySettings("h.db")  # type: ignore[misc]
    for bad in ({"retention_s": 0}, {"max_tasks": 0}, {"sample_interval_s": 0}, {"prune_interval_s": -1}):
        with pytest.raises(ConfigurationError):
            HistorySettings(path="h.db", **bad)


def test_a_closed_store_refuses_reads_and_writes(tmp_path: Path) -> None:
    store = HistoryStore(HistorySettings(path=str(tmp_path / "h.db")))
    store.close()
    with pytest.raises(HistoryError):
        store.apply_events(run("t1", T0))
    with pytest.raises(HistoryError):
        store.task("t1")


def test_reads_from_threads_that_come_and_go_reuse_the_same_connections(varied: HistoryStore) -> None:
    # Given a web server whose worker threads end when idle and new ones start (as anyio's do)
    import threading

    for _ in range(20):
        reader = threading.Thread(target=lambda: varied.tasks(model.TaskQuery()))
        reader.start()
        reader.join()
    # Then the history did not open a connection per thread: memory stays flat
    assert len(varied._readers) == 1
