"""Specification of the worker's heartbeat (taskfleet.worker.heartbeat): the record built from the supervisor's
state, publishing it with its expiry, the hooks, broker failures, and the clean stop."""

from __future__ import annotations

import io
import itertools
import json
import time
from typing import Any

import pytest

import taskfleet
from taskfleet import App
from taskfleet.fleet.records import MISSED_HEARTBEATS, ChildState, PodInfo, WorkerRecord
from taskfleet.worker.heartbeat import Heartbeat, worker_record
from taskfleet.worker.log_throttle import LogThrottle
from taskfleet.worker.logging import get_logger
from taskfleet.worker.tally import Tally
from tests.support.fleet import FakeServer, add_child, fake_supervisor, run_task
from tests.support.waiting import wait_for

POD = PodInfo(name="orders-7d9f-x2x", namespace="shop", uid="0b1c")



def _events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _record(**overrides: Any) -> WorkerRecord:
    fields: dict[str, Any] = {"id": "host:1", "app": "tests", "hostname": "host", "pid": 1, "queues": ("tests",),
                              "concurrency": 1, "version": "0", "started_at": 1.0, "sent_at": 2.0}
    return WorkerRecord(**{**fields, **overrides})


# -- the record ----------------------------------------------------------------------------------------------------


def test_the_record_shows_each_slot_idle_or_busy_with_its_task(memory_app: App) -> None:
    # Given a pool of three: slot 0 runs a task, slot 1 is idle, slot 2's child is being replaced
    supervisor = fake_supervisor(memory_app, concurrency=3, queues=("tests", "urgent"), pod=POD)
    busy = add_child(supervisor, 0, pid=101)
    add_child(supervisor, 1, pid=102)
    run_task(busy, 1, "task-1", "tests.tasks.slow", since=1700000000.5)

    # When the record is built
    record = worker_record(supervisor, worker="host:100", sent_at=1700000001.0)

    # Then it names the worker, its queues and pool, and what each slot does
    assert record.children == (
        ChildState(slot=0, pid=101, task_id="task-1", task="tests.tasks.slow", since=1700000000.5),
        ChildState(slot=1, pid=102),
        ChildState(slot=2, pid=None),
    )
    assert (record.id, record.app, record.queues, record.concurrency) == ("host:100", "tests", ("tests", "urgent"), 3)
    assert record.busy == 1
    assert (record.pod, record.version, record.sent_at) == (POD, taskfleet.__version__, 1700000001.0)
    assert record.started_at == supervisor.started_at
    assert record.heartbeat_interval_s == supervisor.settings.heartbeat_interval_s


def test_the_record_counts_processed_and_failed_tasks_and_shows_a_drain(memory_app: App) -> None:
    supervisor = fake_supervisor(memory_app)
    for outcome in ("success", "success", "failure", "retry", "dead_lettered", "duplicate", "time_limit"):
        supervisor.tally.finished("tests.tasks.add", outcome)
    supervisor.draining = True

    record = worker_record(supervisor, worker="w")

    assert (record.processed, record.failed, record.draining) == (6, 3, True)


def test_the_record_follows_runtime_changes_to_queues_and_pool_size(memory_app: App) -> None:
    supervisor = fake_supervisor(memory_app, concurrency=1)
    supervisor.queues = ("tests", "added")
    supervisor.concurrency = 2

    record = worker_record(supervisor, worker="w")

    assert record.queues == ("tests", "added")
    assert [c.slot for c in record.children] == [0, 1]


@pytest.mark.parametrize(
    ("outcome", "processed", "failed"),
    [
        pytest.param("success", 1, 0, id="success"),
        pytest.param("retry", 1, 0, id="a retry is processed, not failed"),
        pytest.param("revoked", 1, 0, id="revoked"),
        pytest.param("failure", 1, 1, id="failure"),
        pytest.param("dead_lettered", 1, 1, id="dead-lettered"),
        pytest.param("time_limit", 1, 1, id="past its hard time limit"),
        pytest.param("duplicate", 0, 0, id="a redelivery of a finished task is not counted"),
    ],
)
def test_the_tally_counts_by_outcome(outcome: str, processed: int, failed: int) -> None:
    tally = Tally()

    tally.finished("t", outcome)

    assert (tally.processed, tally.failed) == (processed, failed)
    assert tally.by_task() == ({"t": 1} if processed else {})


# -- publishing ----------------------------------------------------------------------------------------------------


def test_each_beat_replaces_the_record_with_an_expiry_of_three_intervals() -> None:
    server = FakeServer()
    records = iter([_record(sent_at=1.0), _record(sent_at=2.0)])
    heartbeat = Heartbeat(worker="host:1", record=lambda: next(records), connect=server.connect, interval_s=0.5)

    heartbeat.beat()
    heartbeat.beat()

    raw, ttl_s = server.records["host:1"]
    assert WorkerRecord.from_json(raw).sent_at == 2.0
    assert ttl_s == MISSED_HEARTBEATS * 0.5
    assert server.connects == 1, "one store for every beat"


def test_hooks_see_the_first_record_as_online_the_next_as_heartbeats_and_the_last_as_offline() -> None:
    server = FakeServer()
    seen: list[tuple[str, float]] = []
    sent = iter([1.0, 2.0, 3.0])
    heartbeat = Heartbeat(worker="host:1", record=lambda: _record(sent_at=next(sent)), connect=server.connect,
                          interval_s=2.0)
    heartbeat.on_record.append(lambda kind, record: seen.append((kind, record.sent_at)))

    heartbeat.beat()
    heartbeat.beat()
    heartbeat.stop()

    assert seen == [("worker-online", 1.0), ("worker-heartbeat", 2.0), ("worker-offline", 3.0)]


def test_a_clean_stop_removes_the_record_at_once_and_closes_the_store() -> None:
    server = FakeServer()
    heartbeat = Heartbeat(worker="host:1", record=_record, connect=server.connect, interval_s=0.05)

    heartbeat.start()
    wait_for(lambda: "host:1" in server.records, timeout=5, message="first beat")
    heartbeat.stop()

    assert server.records == {}
    assert server.forgotten == ["host:1"]
    assert server.closed_stores == server.connects


def test_the_thread_beats_every_interval() -> None:
    server = FakeServer()
    beats: list[float] = []
    heartbeat = Heartbeat(worker="host:1", record=_record, connect=server.connect, interval_s=0.05)
    heartbeat.on_record.append(lambda kind, record: beats.append(time.monotonic()))

    heartbeat.start()
    wait_for(lambda: len(beats) >= 5, timeout=5, message="five beats")
    heartbeat.stop()

    gaps = [b - a for a, b in itertools.pairwise(beats[:5])]
    assert all(0.03 < gap < 0.5 for gap in gaps), gaps


def test_a_broker_failure_is_logged_once_and_the_next_beat_reconnects(logs: io.StringIO) -> None:
    # Given a broker that fails the next three calls
    server = FakeServer(fail_next=3)
    seen: list[str] = []
    heartbeat = Heartbeat(worker="host:1", record=_record, connect=server.connect, interval_s=1.0)
    heartbeat.on_record.append(lambda kind, record: seen.append(kind))

    # When the worker beats through the outage
    for _ in range(4):
        heartbeat.beat()

    # Then one warning is logged, the record is published once the broker is back, and the hooks saw every beat
    warnings = [e for e in _events(logs) if e["level"] == "warning"]
    assert [e["event"] for e in warnings] == ["heartbeat not published; retrying"]
    assert "the broker is down" in warnings[0]["error"]
    assert "host:1" in server.records
    assert [e["event"] for e in _events(logs) if e["level"] == "info"] == ["heartbeat published again"]
    assert seen == ["worker-online", "worker-heartbeat", "worker-heartbeat", "worker-heartbeat"]


def test_a_hook_that_raises_is_logged_and_does_not_stop_the_beats(logs: io.StringIO) -> None:
    server = FakeServer()
    heartbeat = Heartbeat(worker="host:1", record=_record, connect=server.connect, interval_s=1.0)

    def broken(kind: str, record: WorkerRecord) -> None:
        raise RuntimeError("hook bug")

    heartbeat.on_record.append(broken)
    heartbeat.beat()
    heartbeat.beat()

    assert "host:1" in server.records
    errors = [e for e in _events(logs) if e["level"] == "error"]
    assert [e["event"] for e in errors] == ["heartbeat hook failed"] * 2
    assert "hook bug" in errors[0]["exception"]


def test_a_stop_while_the_broker_is_down_leaves_the_record_to_expire(logs: io.StringIO) -> None:
    server = FakeServer()
    heartbeat = Heartbeat(worker="host:1", record=_record, connect=server.connect, interval_s=1.0)
    heartbeat.beat()
    server.fail_next = 1

    heartbeat.stop()

    assert "host:1" in server.records
    assert [e["event"] for e in _events(logs) if e["level"] == "warning"] == [
        "could not remove the worker's record; it expires by itself"]


# -- the rate-limited warning --------------------------------------------------------------------------------------


def test_a_repeating_failure_is_warned_once_then_once_a_minute_and_its_end_once(logs: io.StringIO) -> None:
    now = [0.0]
    throttle = LogThrottle(get_logger("t"), "it failed", every_s=60.0, clock=lambda: now[0])

    for at in (0.0, 2.0, 30.0, 61.0, 62.0):
        now[0] = at
        throttle.failed("boom")
    throttle.recovered("it works again")
    throttle.recovered("it works again")

    warnings = [e for e in _events(logs) if e["level"] == "warning"]
    assert [(e["failures"], e["since_last_warning"]) for e in warnings] == [(1, 0), (4, 2)]
    assert [(e["event"], e["failures"]) for e in _events(logs) if e["level"] == "info"] == [("it works again", 5)]
