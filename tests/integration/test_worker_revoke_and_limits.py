"""Revoke, terminate and rate limits with real worker processes on every broker (``broker_kind``).

The worker learns of revocations from the fleet store (read before its children fork, then every couple of
seconds), so these tests need no control server: ``app.control.revoke`` stores the revocation first.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from taskfleet import App, State
from tests import control_tasks, tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CONTROL_APP = "tests.control_tasks:app"


def lines(path: str) -> list[list[str]]:
    return [line.split() for line in tasks.lines(path)]


def test_a_task_revoked_before_any_worker_starts_never_runs_and_ends_revoked(
        app: App, start_worker: StartWorker, marker: str) -> None:
    # Given a queued task revoked while no worker runs
    result = tasks.record.delay(marker, "ran")
    app.control.revoke(result.id)
    # When a worker starts
    worker = start_worker(app=CONTROL_APP)
    # Then it honours the stored revocation: REVOKED, never run, acked
    wait_for(lambda: result.state is State.REVOKED, 15, message="the revoked task did not end REVOKED")
    assert tasks.add.delay(1, 1).get(timeout=10) == 2
    assert tasks.lines(marker) == []
    assert app.broker.queue_depth("tests").ready == 0
    assert any(line.get("event") == "task revoked" and line.get("reason") == "revoked" for line in worker.logs())


def test_a_delayed_task_revoked_while_it_waits_never_runs(app: App, start_worker: StartWorker, marker: str) -> None:
    start_worker(app=CONTROL_APP)
    result = tasks.record.apply_async((marker, "late"), countdown=3)
    app.control.revoke(result.id)
    wait_for(lambda: result.state is State.REVOKED, 15, message="the delayed revoked task did not end REVOKED")
    assert tasks.lines(marker) == []


def test_terminate_stops_a_running_task_which_is_not_delivered_again_and_a_new_child_takes_its_place(
        app: App, start_worker: StartWorker, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    worker = start_worker(app=CONTROL_APP, concurrency=1)
    # Given a long task running in the worker's only child
    result = control_tasks.sleeper.delay(ledger, 60)
    wait_for(lambda: any(line[0] == "start" for line in lines(ledger)), 15, message="the task did not start")
    [(_, task_id, child_pid)] = [line for line in lines(ledger) if line[0] == "start"]
    assert task_id == result.id
    # When it is revoked with terminate
    app.control.revoke(result.id, terminate=True)
    # Then it ends REVOKED, its child is replaced, and the next task runs in the new child
    wait_for(lambda: result.state is State.REVOKED, 15, message="the terminated task did not end REVOKED")
    new_pid = tasks.pid.delay().get(timeout=20)
    assert new_pid != int(child_pid)
    # And well past the visibility timeout (2 s) it has not run again, nor finished
    time.sleep(app.settings.broker_settings().visibility_timeout_s * 2 + 1)
    assert [line[0] for line in lines(ledger)] == ["start"]
    assert result.state is State.REVOKED
    depth = app.broker.queue_depth("tests")
    assert (depth.ready, depth.in_flight) == (0, 0)
    assert any(line.get("event") == "child replaced after terminating a revoked task" for line in worker.logs())


def test_a_rate_limit_holds_per_worker_without_slowing_other_tasks_in_the_same_queue(
        app: App, start_worker: StartWorker, tmp_path: Path) -> None:
    path = str(tmp_path / "runs")
    start_worker(app=CONTROL_APP, concurrency=3)
    tasks.add.delay(0, 0).get(timeout=10)  # the worker is up and fetching
    # Given a burst of a task limited to 5/s, interleaved with an unlimited one in the same queue
    sent = time.time()
    results = []
    for _ in range(15):
        results.append(control_tasks.limited.delay(path))
        results.append(control_tasks.unlimited.delay(path))
    for result in results:
        result.get(timeout=30)
    runs = lines(path)
    limited = sorted(float(t) for name, t in runs if name == "limited")
    unlimited = sorted(float(t) for name, t in runs if name == "unlimited")
    assert (len(limited), len(unlimited)) == (15, 15)
    # Then no second holds more than 5 starts of the limited task (one more for clock edges), so 15 take >= 2.8 s
    most_in_a_second = max(sum(1 for t in limited if start <= t < start + 1.0) for start in limited)
    assert most_in_a_second <= 6, limited
    assert limited[-1] - limited[0] >= 2.4
    # And the unlimited ones were not held behind them: all done long before the limited ones
    assert unlimited[-1] - sent < limited[-1] - sent - 1.0, (unlimited, limited)
