"""Live workers and their control server, with real worker processes on every broker (``broker_kind``): the
registry (``app.control.workers()``) fed by heartbeats, and ``app.control.inspect()`` answered by the worker."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from taskfleet import App
from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.fleet.records import PodInfo, WorkerRecord
from taskfleet.urls import mask_url
from tests import tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

#: A short heartbeat, so expiry is quick to see: a record lives three of them.
INTERVAL_S = 0.5
FAST = ["--heartbeat-interval", str(INTERVAL_S)]


def _id(worker: WorkerProcess) -> str:
    return f"{socket.gethostname()}:{worker.pid}"


def _record(app: App, worker: WorkerProcess) -> WorkerRecord | None:
    return next((r for r in app.control.workers() if r.id == _id(worker)), None)


def _listed(app: App, worker: WorkerProcess, timeout: float = 10.0) -> WorkerRecord:
    wait_for(lambda: _record(app, worker) is not None, timeout, message=f"{_id(worker)} is not listed")
    record = _record(app, worker)
    assert record is not None
    return record


def test_a_started_worker_is_listed_with_its_queues_pool_and_no_pod(app: App, start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=2, queues="tests,tests-low", extra=FAST)

    record = _listed(app, worker)

    assert (record.app, record.pid, record.hostname) == ("tests", worker.pid, socket.gethostname())
    assert (record.queues, record.concurrency, record.pod, record.draining) == (("tests", "tests-low"), 2, None, False)
    assert record.heartbeat_interval_s == INTERVAL_S
    assert [c.slot for c in record.children] == [0, 1]
    wait_for(lambda: all(c.pid for c in (_record(app, worker) or record).children), 10,
             message="every child has started")
    assert record.busy == 0


def test_a_worker_in_a_pod_names_it_in_its_record(app: App, start_worker: StartWorker,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the downward-API variables the operator's Deployment sets
    for key, value in (("NAME", "orders-worker-7d9f-x2x"), ("NAMESPACE", "shop"), ("UID", "0b1c-77")):
        monkeypatch.setenv(f"TASKFLEET_POD_{key}", value)

    worker = start_worker(concurrency=1)

    assert _listed(app, worker).pod == PodInfo(name="orders-worker-7d9f-x2x", namespace="shop", uid="0b1c-77")


def test_a_child_running_a_long_task_shows_busy_with_the_task_and_inspect_active_names_it(
        app: App, start_worker: StartWorker, marker: str) -> None:
    # Given a worker running a long task
    worker = start_worker(concurrency=2, extra=FAST)
    result = tasks.slow_record.delay(marker, 4.0)

    # Then its record shows one child busy with it
    def busy_with_it() -> bool:
        record = _record(app, worker)
        return record is not None and [c.task_id for c in record.children if c.busy] == [result.id]

    wait_for(busy_with_it, 10, message="the record never showed the task")
    record = _record(app, worker)
    assert record is not None
    [child] = [c for c in record.children if c.busy]
    assert child.task == "tests.slow_record"
    assert child.since is not None
    assert abs(child.since - time.time()) < 10

    # And inspect().active() names it, with the child's pid and the queue
    active = app.control.inspect(destination=_id(worker), timeout=5).active()
    assert active is not None
    [running] = active[_id(worker)]
    assert (running["id"], running["name"], running["worker_pid"]) == (result.id, "tests.slow_record", child.pid)
    assert running["delivery_info"]["routing_key"] == "tests"

    # And once it finished, the worker counts it
    assert result.get(timeout=15) == "done"
    wait_for(lambda: (r := _record(app, worker)) is not None and r.processed == 1 and r.busy == 0, 10,
             message="the finished task was not counted")


def test_inspect_ping_registered_and_stats_are_answered(app: App, start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=1)
    inspect = app.control.inspect(destination=_id(worker), timeout=5)

    assert inspect.ping() == {_id(worker): {"ok": "pong"}}
    registered = inspect.registered()
    assert registered is not None
    assert "tests.add" in registered[_id(worker)]
    assert tasks.add.delay(2, 3).get(timeout=10) == 5
    stats = inspect.stats()
    assert stats is not None
    mine = stats[_id(worker)]
    assert mine["pid"] == worker.pid
    assert mine["pool"]["max-concurrency"] == 1
    assert mine["total"] == {"tests.add": 1}
    assert mine["queues"] == ["tests"]
    assert mine["broker"]["url"] == mask_url(str(app.settings.broker_url)), "the password masked"
    assert inspect.scheduled() == {_id(worker): []}
    assert inspect.reserved() == {_id(worker): []}


def test_destination_reaches_only_the_named_worker(app: App, start_worker: StartWorker) -> None:
    first, second = start_worker(concurrency=1), start_worker(concurrency=1)

    assert app.control.inspect(destination=_id(first), timeout=5).ping() == {_id(first): {"ok": "pong"}}
    assert app.control.inspect(destination=[_id(second)], timeout=5).ping() == {_id(second): {"ok": "pong"}}
    everyone = app.control.inspect(timeout=2).ping()
    assert everyone is not None
    assert set(everyone) == {_id(first), _id(second)}


def test_a_sigkilled_worker_leaves_the_list_within_about_three_heartbeats(
        app: App, start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=1, extra=FAST)
    _listed(app, worker)

    worker.signal(signal.SIGKILL)
    worker.wait_exit(timeout=10)
    killed_at = time.monotonic()
    wait_for(lambda: _record(app, worker) is None, 3 * INTERVAL_S + 3, interval=0.05,
             message="the killed worker is still listed")

    assert time.monotonic() - killed_at <= 3 * INTERVAL_S + 1.5


def test_a_clean_stop_removes_the_worker_at_once(app: App, start_worker: StartWorker) -> None:
    # Given a listed worker with a slow heartbeat (its record would live for a minute)
    worker = start_worker(concurrency=1, extra=["--heartbeat-interval", "20"])
    _listed(app, worker)

    # When it stops on SIGTERM
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(timeout=20) == 0

    # Then it is gone from the list without waiting for an expiry
    assert _record(app, worker) is None


def test_a_worker_draining_says_so_in_its_record(app: App, start_worker: StartWorker, marker: str) -> None:
    worker = start_worker(concurrency=1, extra=FAST)
    tasks.slow_record.delay(marker, 3.0)
    wait_for(lambda: (r := _record(app, worker)) is not None and r.busy == 1, 10, message="task started")

    worker.signal(signal.SIGTERM)

    wait_for(lambda: (r := _record(app, worker)) is not None and r.draining, 5, message="no draining record")


def test_garbage_on_the_control_channel_is_logged_and_dropped_and_the_worker_still_answers(
        app: App, start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=1)
    store = connect_fleet_store(app.broker, namespace=app.name)
    try:
        store.publish_control(b"not json")
    finally:
        store.close()

    wait_for(lambda: "control message dropped: not a valid request" in worker.log_text(), 10,
             message="the garbage was not logged")
    assert app.control.inspect(destination=_id(worker), timeout=5).ping() == {_id(worker): {"ok": "pong"}}
    [dropped] = [line for line in worker.logs() if line.get("event") == "control message dropped: not a valid request"]
    assert (dropped["level"], dropped["excerpt"], dropped["size"]) == ("warning", "b'not json'", 8)


def test_a_worker_without_heartbeat_is_not_listed_but_answers(app: App, start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=1, extra=["--without-heartbeat"])

    assert app.control.inspect(destination=_id(worker), timeout=5).ping() == {_id(worker): {"ok": "pong"}}
    assert _record(app, worker) is None
