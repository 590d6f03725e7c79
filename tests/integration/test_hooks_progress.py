"""A real prefork worker on every broker (``broker_kind``; results in Redis, or SQLite beside the SQLite broker):
progress updates reach the caller, the worker children send ``worker_process_init`` and
``worker_process_shutdown``, and a task class's hooks run, without losing a task when one raises. The tasks are
those of tests/hook_tasks.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskfleet import App, State
from taskfleet.result import StateUpdate
from tests import hook_tasks, tasks
from tests.conftest import StartWorker
from tests.support.brokers import BrokerKind
from tests.support.waiting import wait_for
from tests.support.workers import children_of

pytestmark = pytest.mark.integration

HOOKS_APP = "tests.hook_tasks:app"
STEPS = 3


@pytest.fixture(autouse=True)
def _results_ready(app: App) -> None:
    """Open the result backend before any worker does. Two processes opening a new SQLite file at the same moment
    can fail with "database is locked" (its WAL switch and tables are made on first open, on main too), and here the
    caller's first read and a worker child's first write would meet."""
    assert app.backend is not None
    app.backend.ping()


def _opening(gate: Path, seen: list[StateUpdate]) -> object:
    """An ``on_message`` that keeps each update and opens ``gate`` once the task waits at it."""

    def on_message(update: StateUpdate) -> None:
        seen.append(update)
        if update["status"] == "WAITING":
            gate.touch()

    return on_message


def _progress(seen: list[StateUpdate]) -> list[object]:
    return [update["result"] for update in seen if update["status"] == "PROGRESS"]


def test_a_caller_receives_every_progress_update_in_order_then_the_result(
        app: App, start_worker: StartWorker, tmp_path: Path) -> None:
    # Given a worker, and a task that reports PROGRESS three times once its caller listens
    start_worker(app=HOOKS_APP)
    expected = [{"done": i, "total": STEPS} for i in range(1, STEPS + 1)]

    # When a caller waits with get(on_message=)
    seen: list[StateUpdate] = []
    result = hook_tasks.report_progress.delay(str(tmp_path / "gate-1"), STEPS)
    value = result.get(timeout=15, on_message=_opening(tmp_path / "gate-1", seen))  # type: ignore[arg-type]

    # Then it saw each update, in order, then the final state, and got the result
    assert value == "done"
    assert [u["status"] for u in seen] == ["WAITING", "PROGRESS", "PROGRESS", "PROGRESS", State.SUCCESS]
    assert _progress(seen) == expected
    assert (seen[-1]["result"], seen[-1]["task_id"]) == ("done", result.id)

    # And a caller iterating over updates() sees the same
    iterated: list[StateUpdate] = []
    opening = _opening(tmp_path / "gate-2", iterated)
    second = hook_tasks.report_progress.delay(str(tmp_path / "gate-2"), STEPS)
    for update in second.updates(timeout=15):
        opening(update)  # type: ignore[operator]
    assert [u["status"] for u in iterated] == ["WAITING", "PROGRESS", "PROGRESS", "PROGRESS", State.SUCCESS]
    assert _progress(iterated) == expected
    assert second.info == "done"


def test_worker_process_init_runs_in_each_child_and_shutdown_when_it_stops(
        app: App, start_worker: StartWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noted = tmp_path / "processes.txt"
    monkeypatch.setenv(hook_tasks.PROCESS_FILE_ENV, str(noted))

    worker = start_worker(app=HOOKS_APP, concurrency=2)
    wait_for(lambda: len(hook_tasks.process_lines(noted)) >= 2, timeout=10, message="two children initialised")
    children = set(children_of(worker.pid))
    inits = {int(line.split()[1]) for line in hook_tasks.process_lines(noted) if line.startswith("init")}
    assert inits == children, "once in each child, in the child"
    assert tasks.add.delay(1, 2).get(timeout=10) == 3

    worker.stop()

    shutdowns = {int(line.split()[1]) for line in hook_tasks.process_lines(noted) if line.startswith("shutdown")}
    assert shutdowns == inits


def test_a_task_classs_hooks_run_in_the_worker_after_the_outcome_is_stored(
        app: App, start_worker: StartWorker, marker: str, tmp_path: Path) -> None:
    start_worker(app=HOOKS_APP)
    failing = str(tmp_path / "failing.txt")

    succeeded = hook_tasks.hooked_add.delay(marker, 2, 3)
    failed = hook_tasks.hooked_fail.delay(failing, "bad input")

    assert succeeded.get(timeout=10) == 5
    with pytest.raises(ValueError, match="bad input"):
        failed.get(timeout=10)
    # The result is stored before the hooks run: they may finish a moment after get() returns.
    wait_for(lambda: len(tasks.lines(marker)) == 4 and len(tasks.lines(failing)) == 3, timeout=5,
             message="the hooks ran")
    assert tasks.lines(marker) == [f"before_start {succeeded.id}", "body", "on_success 5",
                                   "after_return SUCCESS False"]
    assert tasks.lines(failing) == [f"before_start {failed.id}", "on_failure ValueError ValueError True",
                                    "after_return FAILURE True"]


def test_a_hook_that_raises_loses_no_task_and_changes_no_outcome(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, marker: str, tmp_path: Path) -> None:
    worker = start_worker(app=HOOKS_APP)
    retried = str(tmp_path / "retried.txt")

    assert hook_tasks.broken_hooks_add.delay(marker, 2, 2).get(timeout=10) == 4
    assert hook_tasks.broken_hooks_flaky.delay(retried).get(timeout=10) == "ok"

    assert tasks.lines(marker) == ["body"], "ran once"
    assert tasks.lines(retried) == ["attempt 0", "attempt 1"]
    broker_kind.expect_depth(app.broker, "tests", ready=0, in_flight=0, timeout_s=max(5, broker_kind.count_lag_s))
    wait_for(lambda: sum(e.get("event") == "task hook raised; the task's outcome stands" for e in worker.logs()) >= 8,
             timeout=5, message="the raising hooks were logged")
    hooks = [e["hook"] for e in worker.logs() if e.get("event") == "task hook raised; the task's outcome stands"]
    assert sorted(hooks) == sorted(["before_start", "on_success", "after_return",  # broken_hooks_add
                                    "before_start", "on_retry",  # its first attempt
                                    "before_start", "on_success", "after_return"])  # its second
