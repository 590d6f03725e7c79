"""``app.control`` commands that change a running worker, end to end on every broker (``broker_kind``): runtime
rate and time limits, consumers, pool size, shutdown, and a terminate answered at once.

They travel through the worker's control server (taskfleet.worker.control_server); until it serves the control
commands' handlers (taskfleet.worker.control_commands) these tests are skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from taskfleet import App, State, TimeLimitExceeded
from tests import control_tasks, tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, children_of

pytestmark = pytest.mark.integration

control_server = pytest.importorskip("taskfleet.worker.control_server")
if "rate_limit" not in control_server.handler_table():
    pytest.skip("the worker's control server does not serve the control commands yet", allow_module_level=True)

CONTROL_APP = "tests.control_tasks:app"


def started(start_worker: StartWorker, app: App, **kwargs: object) -> WorkerProcess:
    """A worker that answers control requests (its listener is open once it answers a ping)."""
    worker = start_worker(app=CONTROL_APP, **kwargs)
    wait_for(lambda: bool(app.control.ping(timeout=0.5)), 20, message="the worker did not answer a ping")
    return worker


def ok(replies: list) -> dict:  # type: ignore[type-arg]
    [reply] = replies
    assert reply.ok, reply
    return reply.result  # type: ignore[no-any-return]


def test_a_runtime_rate_limit_takes_effect_and_can_be_removed(app: App, start_worker: StartWorker,
                                                              tmp_path: Path) -> None:
    path = str(tmp_path / "runs")
    started(start_worker, app, concurrency=3)
    assert ok(app.control.rate_limit(control_tasks.unlimited.name, "2/s", reply=True)) == {
        "ok": "rate limit set successfully"}
    for result in [control_tasks.unlimited.delay(path) for _ in range(5)]:
        result.get(timeout=20)
    starts = sorted(float(t) for _, t in (line.split() for line in tasks.lines(path)))
    assert starts[-1] - starts[0] >= 1.6  # 5 starts at 2/s
    ok(app.control.rate_limit(control_tasks.unlimited.name, None, reply=True))
    sent = time.time()
    for result in [control_tasks.unlimited.delay(path) for _ in range(10)]:
        result.get(timeout=20)
    assert time.time() - sent < 3.0


def test_a_runtime_time_limit_takes_effect(app: App, start_worker: StartWorker, tmp_path: Path) -> None:
    started(start_worker, app, concurrency=1)
    ok(app.control.time_limit(control_tasks.sleeper.name, soft=None, hard=1.0, reply=True))
    result = control_tasks.sleeper.delay(str(tmp_path / "ledger"), 30)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=20)


def test_a_bad_argument_is_refused_with_its_reason(app: App, start_worker: StartWorker) -> None:
    started(start_worker, app)
    [reply] = app.control.rate_limit("tests.nope", "1/s", reply=True)
    assert not reply.ok
    assert "unknown task" in str(reply.result)


def test_consumers_are_added_and_cancelled_at_runtime(app: App, start_worker: StartWorker, marker: str) -> None:
    started(start_worker, app)
    ok(app.control.add_consumer("extra", reply=True))
    assert tasks.record.apply_async((marker, "extra"), queue="extra").get(timeout=15) == "extra"
    ok(app.control.cancel_consumer("extra", reply=True))
    time.sleep(2)  # the children's fetches in flight end
    tasks.record.apply_async((marker, "ignored"), queue="extra")
    time.sleep(3)
    assert app.broker.queue_depth("extra").ready == 1
    [reply] = app.control.cancel_consumer("tests", reply=True)
    assert not reply.ok  # the last queue stays


def test_the_pool_grows_and_shrinks_at_runtime(app: App, start_worker: StartWorker) -> None:
    worker = started(start_worker, app, concurrency=2)
    assert ok(app.control.pool_grow(2, reply=True))["concurrency"] == 4
    wait_for(lambda: len(children_of(worker.pid)) == 4, 15, message="the pool did not grow to 4")
    assert ok(app.control.pool_shrink(3, reply=True))["concurrency"] == 1
    wait_for(lambda: len(children_of(worker.pid)) == 1, 15, message="the pool did not shrink to 1")
    assert tasks.add.delay(2, 3).get(timeout=10) == 5


def test_shutdown_stops_the_worker_cleanly(app: App, start_worker: StartWorker) -> None:
    worker = started(start_worker, app)
    ok(app.control.shutdown(reply=True))
    assert worker.wait_exit(timeout=20) == 0
    assert any(line.get("event") == "worker stopped" for line in worker.logs())


def test_a_terminate_is_answered_with_the_tasks_it_stopped(app: App, start_worker: StartWorker,
                                                           tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    started(start_worker, app, concurrency=1)
    result = control_tasks.sleeper.delay(ledger, 60)
    wait_for(lambda: bool(tasks.lines(ledger)), 15, message="the task did not start")
    reply = ok(app.control.revoke(result.id, terminate=True, reply=True))
    assert reply == {"ok": f"tasks {result.id} flagged as revoked", "terminated": [result.id]}
    wait_for(lambda: result.state is State.REVOKED, 10, message="the terminated task did not end REVOKED")
