"""Specification of state updates (taskfleet.task ``update_state``, taskfleet.result, the result backends'
``updates``/``wait(on_update=)``): custom states, ``AsyncResult.info``/``status``/``date_done``/``name``, Celery's
``result_extended``, and a caller seeing every update in order through ``get(on_message=)`` and ``updates()``.
Runs deliveries in this process (tests/support/executing.py) with the tasks of tests/hook_tasks.py."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App, AsyncResult, ResultTimeout, State, TaskRevoked
from taskfleet.backends import connect
from taskfleet.backends import sqlite as sqlite_backend
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.errors import DecodeError
from taskfleet.result import StateUpdate
from taskfleet.serializers import get_serializer
from taskfleet.settings import BackendSettings
from tests import hook_tasks, tasks
from tests.support.executing import in_memory, run_next
from tests.support.waiting import wait_for

STEPS = 3


@pytest.fixture
def app() -> Iterator[App]:
    with in_memory(tasks.app) as configured:
        yield configured


@pytest.fixture
def extended_app() -> Iterator[App]:
    with in_memory(tasks.app, result_extended=True) as configured:
        yield configured


def _record(state: State | str, task_id: str = "t1", **fields: Any) -> ResultRecord:
    return ResultRecord(task_id=task_id, state=state, task="tests.job", **fields)


# -- custom states -----------------------------------------------------------------------------------------------


def test_a_custom_state_is_read_back_as_its_string_and_a_built_in_one_as_its_member() -> None:
    json = get_serializer("json")
    accept = frozenset({"json"})

    progress = ResultRecord.decode(_record("PROGRESS", result={"done": 1}).encode(json), accept=accept)
    success = ResultRecord.decode(_record(State.SUCCESS).encode(json), accept=accept)

    assert (progress.state, type(progress.state), progress.result) == ("PROGRESS", str, {"done": 1})
    assert success.state is State.SUCCESS
    assert not progress.ready


@pytest.mark.parametrize("state", ["", None, 3])
def test_a_stored_record_without_a_state_string_is_a_decode_error(state: Any) -> None:
    data = b'application/json\n{"task_id": "t1", "state": ' + (b'"' + state.encode() + b'"' if isinstance(
        state, str) else str(state).lower().replace("none", "null").encode()) + b"}"

    with pytest.raises(DecodeError, match="malformed result record"):
        ResultRecord.decode(data, accept=frozenset({"json"}))


def test_update_state_stores_the_custom_state_and_its_meta_while_the_task_runs(app: App, marker: str) -> None:
    seen: list[tuple[Any, ...]] = []

    @app.task(name="tests.progressing", bind=True)
    def progressing(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
        result = AsyncResult(self.request.id, app=app)
        seen.append((result.state, result.status, result.info, result.result, result.ready(), result.date_done))
        return "finished"

    try:
        result = progressing.delay()
        run_next(app)
    finally:
        del app.tasks["tests.progressing"]

    assert seen == [("PROGRESS", "PROGRESS", {"done": 1, "total": 2}, None, False, None)]
    assert (result.state, result.info) == (State.SUCCESS, "finished")


@pytest.mark.parametrize("state", [None, "", State.SUCCESS, "FAILURE", State.REVOKED])
def test_update_state_refuses_no_state_and_the_final_states(state: Any) -> None:
    with pytest.raises(ValueError, match="update_state"):
        tasks.add.update_state(task_id="t1", state=state)


def test_update_state_outside_a_worker_needs_a_task_id(app: App) -> None:
    with pytest.raises(ValueError, match="task_id="):
        tasks.add.update_state(state="PROGRESS")


def test_update_state_with_a_task_id_stores_that_tasks_state(app: App) -> None:
    tasks.add.update_state(task_id="other", state="PROGRESS", meta=[1, 2])

    other = app.AsyncResult("other")
    assert (other.state, other.info, other.name) == ("PROGRESS", [1, 2], None)


def test_update_state_of_an_ignore_result_task_stores_nothing(app: App, marker: str) -> None:
    result = hook_tasks.progress_ignored.delay(marker)

    run_next(app)

    assert tasks.lines(marker) == ["ran"]
    assert app.backend is not None
    assert app.backend.get(result.id) is None


def test_update_state_without_a_result_backend_does_nothing() -> None:
    no_backend = App("nb")
    task = no_backend.task(name="nb.job")(lambda: None)

    task.update_state(task_id="t1", state="PROGRESS")  # no error


# -- AsyncResult ---------------------------------------------------------------------------------------------------


def test_info_is_what_each_state_carries(app: App) -> None:
    backend = app.backend
    assert backend is not None
    result = app.AsyncResult("t1")
    infos: list[Any] = [result.info]
    for record in [_record(State.STARTED), _record("PROGRESS", result={"done": 2}), _record(State.SUCCESS, result=7),
                   _record(State.RETRY, exc_type="builtins.OSError", exc_message="flake", exc_args=["flake"]),
                   _record(State.FAILURE, exc_type="builtins.ValueError", exc_message="bad", exc_args=["bad"]),
                   _record(State.REVOKED, exc_message="expired")]:
        backend.store(record)
        infos.append(result.info)

    pending, started, progress, success, retry, failure, revoked = infos
    assert (pending, started, progress, success) == (None, None, {"done": 2}, 7)
    assert isinstance(retry, OSError)
    assert isinstance(failure, ValueError)
    assert isinstance(revoked, TaskRevoked)
    assert str(revoked) == "expired"


def test_date_done_is_when_the_final_state_was_stored_in_utc(app: App) -> None:
    result = tasks.add.delay(1, 2)
    assert result.date_done is None
    tasks.add.update_state(task_id=result.id, state=State.STARTED)
    assert result.date_done is None, "not done yet"

    before = datetime.now(UTC)
    run_next(app)

    assert result.date_done is not None
    assert result.date_done.tzinfo is UTC
    assert before.timestamp() - 0.01 <= result.date_done.timestamp() <= time.time() + 0.01


def test_name_is_the_stored_task_name_and_args_are_not_stored_by_default(app: App) -> None:
    result = tasks.add.delay(1, 2)
    assert (result.name, result.args, result.kwargs, result.retries) == (None, None, None, 0)

    run_next(app)

    assert (result.name, result.args, result.kwargs, result.queue) == ("tests.add", None, None, None)


def test_result_extended_stores_args_kwargs_and_queue(extended_app: App, marker: str) -> None:
    result = tasks.flaky.apply_async((marker, 1), {})

    run_next(extended_app)

    assert result.state is State.RETRY
    assert (result.name, result.args, result.kwargs, result.queue, result.retries) == (
        "tests.flaky", [marker, 1], {}, "tests", 1)


def test_result_extended_is_off_by_default() -> None:
    assert App("t").settings.result_extended is False
    assert App("t", result_extended=True).settings.result_extended is True


def test_wait_is_get(app: App) -> None:
    result = tasks.add.delay(2, 2)
    run_next(app)

    assert result.wait(timeout=1) == 4


# -- a caller sees every update ------------------------------------------------------------------------------------


def _listen(result: AsyncResult, gate: Path, *, iterate: bool) -> tuple[threading.Thread, list[StateUpdate]]:
    """A thread that follows ``result`` (``updates()`` or ``get(on_message=)``) and opens ``gate`` at WAITING."""
    seen: list[StateUpdate] = []

    def on_message(update: StateUpdate) -> None:
        seen.append(update)
        if update["status"] == "WAITING":
            gate.touch()

    def follow() -> None:
        if iterate:
            for update in result.updates(timeout=10):
                on_message(update)
        else:
            seen.append({"returned": result.get(timeout=10, on_message=on_message)})  # type: ignore[typeddict-item]

    thread = threading.Thread(target=follow)
    thread.start()
    return thread, seen


@pytest.mark.parametrize("iterate", [False, True], ids=["get(on_message=)", "updates()"])
def test_a_caller_sees_every_state_update_in_order_then_the_result(
    app: App, tmp_path: Path, iterate: bool
) -> None:
    gate = tmp_path / "gate"
    result = hook_tasks.report_progress.delay(str(gate), STEPS)
    thread, seen = _listen(result, gate, iterate=iterate)

    run_next(app)
    thread.join(10)

    statuses = [update.get("status") for update in seen]
    assert statuses[:5] == ["WAITING", "PROGRESS", "PROGRESS", "PROGRESS", State.SUCCESS]
    assert [update["result"] for update in seen[1:4]] == [{"done": i, "total": STEPS} for i in (1, 2, 3)]
    final = seen[4]
    assert (final["task_id"], final["result"], final["traceback"], final["children"]) == (result.id, "done", None, [])
    assert isinstance(final["date_done"], datetime)
    assert seen[1]["date_done"] is None
    assert "args" not in final, "stored only with result_extended"
    if not iterate:
        assert seen[5:] == [{"returned": "done"}]


def test_a_tracked_start_is_an_update_too_and_extended_updates_carry_the_arguments(
    extended_app: App, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    task = hook_tasks.report_progress
    monkeypatch.setattr(task, "options", dataclasses.replace(task.options, track_started=True))
    gate = tmp_path / "gate"
    result = task.delay(str(gate), 1)
    task.update_state(task_id=result.id, state="QUEUED")  # what the listener reads first: then it is listening
    thread, seen = _listen(result, gate, iterate=True)
    wait_for(lambda: seen, timeout=5)

    run_next(extended_app)
    thread.join(10)

    assert [update["status"] for update in seen] == ["QUEUED", State.STARTED, "WAITING", "PROGRESS", State.SUCCESS]
    assert "args" not in seen[0], "stored by the caller, not the worker"
    assert all(update["args"] == [str(gate), 1] for update in seen[1:])
    assert (seen[-1]["name"], seen[-1]["queue"], seen[-1]["kwargs"]) == ("tests.report_progress", "tests", {})


def test_an_exception_in_on_message_propagates_out_of_get(app: App) -> None:
    tasks.add.update_state(task_id="t1", state="PROGRESS")

    def broken(update: StateUpdate) -> None:
        raise KeyError("caller bug")

    with pytest.raises(KeyError, match="caller bug"):
        app.AsyncResult("t1").get(timeout=1, on_message=broken)


def test_updates_of_an_unfinished_task_time_out(app: App) -> None:
    tasks.add.update_state(task_id="t1", state="PROGRESS", meta=1)
    updates = app.AsyncResult("t1").updates(timeout=0.1)

    assert next(updates)["result"] == 1
    with pytest.raises(ResultTimeout):
        next(updates)


# -- the backends keep what a polling waiter has not read yet ---------------------------------------------------


@pytest.fixture
def backend(stub_or_sqlite_backend: ResultBackend) -> ResultBackend:
    return stub_or_sqlite_backend


def test_updates_stored_between_two_reads_of_a_waiter_are_all_seen_in_order(backend: ResultBackend) -> None:
    backend.store(_record("WAITING"))
    updates = backend.updates("t1", timeout_s=5)
    assert next(updates).state == "WAITING"

    for done in (1, 2, 3):
        backend.store(_record("PROGRESS", result=done))
    backend.store(_record(State.SUCCESS, result="done"))

    assert [(r.state, r.result) for r in updates] == [
        ("PROGRESS", 1), ("PROGRESS", 2), ("PROGRESS", 3), (State.SUCCESS, "done")]


def test_a_waiter_starts_from_the_state_stored_when_it_starts(backend: ResultBackend) -> None:
    for done in (1, 2):
        backend.store(_record("PROGRESS", result=done))
    seen: list[ResultRecord] = []
    thread = threading.Thread(target=lambda: backend.wait("t1", 5, on_update=seen.append))
    thread.start()
    wait_for(lambda: seen, timeout=5)
    backend.store(_record(State.SUCCESS, result="done"))
    thread.join(5)

    assert [(r.state, r.result) for r in seen] == [("PROGRESS", 2), (State.SUCCESS, "done")]


def test_forget_deletes_the_kept_updates_too(backend: ResultBackend) -> None:
    backend.store(_record("PROGRESS", result=1))
    backend.forget("t1")
    backend.store(_record(State.SUCCESS, result=2))

    assert [(r.state, r.result) for r in backend.updates("t1", timeout_s=1)] == [(State.SUCCESS, 2)]


def test_sqlite_keeps_only_the_newest_updates_of_a_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "KEEP_UPDATES", 2)
    backend = connect(BackendSettings(url=f"sqlite:///{tmp_path / 'results.db'}"))
    backend.store(_record("WAITING"))
    updates = backend.updates("t1", timeout_s=5)
    next(updates)

    for done in (1, 2, 3, 4):
        backend.store(_record("PROGRESS", result=done))
    backend.store(_record(State.SUCCESS))

    assert [r.result for r in updates] == [3, 4, None], "the two newest updates, then the final state"
    backend.close()
