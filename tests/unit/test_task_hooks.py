"""Specification of task classes and their hooks (taskfleet.hooks, taskfleet.task, taskfleet.worker.lifecycle):
``@app.task(base=)``, ``App(task_cls=)``, ``Task.run`` and ``__call__``, and when a worker child calls
``before_start``, ``on_success``, ``on_failure``, ``on_retry`` and ``after_return``. Runs deliveries in this process
(tests/support/executing.py) with the tasks of tests/hook_tasks.py."""

from __future__ import annotations

import contextvars
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from taskfleet import App, ConfigurationError, State, Task
from taskfleet.canvas.builtins import NAMES as BUILTIN_TASKS
from taskfleet.hooks import ExceptionInfo, TaskHooks
from taskfleet.worker.executor import ACK, ACK_NOW, DeadLetter
from taskfleet.worker.lifecycle import overrides_hooks, task_run
from tests import hook_tasks, tasks
from tests.support.executing import in_memory, run_next


@pytest.fixture
def app() -> Iterator[App]:
    with in_memory(tasks.app) as configured:
        yield configured



def _events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- task classes --------------------------------------------------------------------------------------------------


class Plain(Task[Any]):
    """A Task subclass that overrides nothing."""


def test_base_makes_the_task_an_instance_of_that_class() -> None:
    app = App("t")

    @app.task(base=hook_tasks.Recorder)
    def job() -> None: ...

    assert isinstance(job, hook_tasks.Recorder)
    assert app.tasks["t.job"] is job


def test_task_cls_is_the_class_of_every_task_of_the_app_unless_base_names_another() -> None:
    app = App("t", task_cls=Plain)

    @app.task
    def plain() -> None: ...

    @app.task(base=hook_tasks.Recorder)
    def recorded() -> None: ...

    assert (type(plain), type(recorded)) == (Plain, hook_tasks.Recorder)
    assert type(App("t").task(lambda: None)) is Task


@pytest.mark.parametrize("cls", [object, int, "tests.hook_tasks.Recorder", TaskHooks])
def test_a_base_that_is_not_a_task_subclass_is_a_configuration_error(cls: Any) -> None:
    app = App("t")

    with pytest.raises(ConfigurationError, match=r"@app.task\(base=\) must be a subclass of taskfleet.Task"):
        app.task(base=cls)
    assert set(app.tasks) == set(BUILTIN_TASKS), "nothing registered but the builtins every app has"


def test_a_task_cls_that_is_not_a_task_subclass_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"App\(task_cls=\) must be a subclass of taskfleet.Task"):
        App("t", task_cls=dict)  # type: ignore[arg-type]


def test_run_is_the_function_and_binds_the_task_when_bind_is_set() -> None:
    app = App("t")
    plain = app.task(name="t.plain")(lambda x: x * 2)
    bound = app.task(name="t.bound", bind=True)(lambda self, x: (self.name, x))

    assert plain.run(4) == 8
    assert bound.run(4) == (bound.name, 4)
    assert bound(4) == (bound.name, 4), "a direct call goes through run too"


_flask_context: contextvars.ContextVar[str | None] = contextvars.ContextVar("flask_context", default=None)


class ContextTask(Task[Any]):
    """The Flask pattern: each run inside the framework's app context."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = _flask_context.set("app context")
        try:
            return self.run(*args, **kwargs)
        finally:
            _flask_context.reset(token)


def test_a_task_cls_whose_call_wraps_run_wraps_every_run_in_a_worker() -> None:
    flaskish = App("flaskish", default_queue="flaskish", task_cls=ContextTask)

    @flaskish.task
    def in_context() -> str | None:
        return _flask_context.get()

    with in_memory(flaskish) as app:
        result = in_context.delay()
        run_next(app, "flaskish")

        assert result.get(timeout=1) == "app context"
    assert in_context() == "app context", "and a direct call"


def test_a_plain_task_with_no_signal_receiver_gets_no_hook_or_signal_work() -> None:
    assert not overrides_hooks(Plain)
    assert overrides_hooks(hook_tasks.Recorder)
    assert task_run(tasks.add, tasks.add.request) is None


# -- hooks in a worker ---------------------------------------------------------------------------------------------


def test_a_success_calls_before_start_on_success_and_after_return_in_order(app: App, marker: str) -> None:
    result = hook_tasks.hooked_add.delay(marker, 2, 3)

    outcome = run_next(app)

    assert (outcome.outcome, outcome.decision) == ("success", ACK)
    assert tasks.lines(marker) == [f"before_start {result.id}", "body", "on_success 5", "after_return SUCCESS False"]


def test_on_success_runs_after_the_result_is_stored(app: App, marker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[State | str] = []
    monkeypatch.setattr(hook_tasks.Recorder, "on_success", lambda self, retval, task_id, args, kwargs: seen.append(
        app.AsyncResult(task_id).state))
    hook_tasks.hooked_add.delay(marker, 1, 1)

    run_next(app)

    assert seen == [State.SUCCESS]


def test_a_failure_calls_on_failure_with_the_exception_and_its_info_then_after_return(app: App, marker: str) -> None:
    result = hook_tasks.hooked_fail.delay(marker, "bad input")

    outcome = run_next(app)

    assert (outcome.outcome, outcome.decision) == ("failure", ACK)
    assert tasks.lines(marker) == [f"before_start {result.id}", "on_failure ValueError ValueError True",
                                   "after_return FAILURE True"]
    assert result.state is State.FAILURE


def test_a_retry_calls_on_retry_and_not_after_return_then_the_next_attempt_succeeds(app: App, marker: str) -> None:
    result = hook_tasks.hooked_flaky.delay(marker)

    first = run_next(app)
    second = run_next(app, wait_s=2)  # the retry asked for a 0.1 s countdown

    assert (first.outcome, first.decision) == ("retry", ACK_NOW)
    assert second.outcome == "success"
    assert tasks.lines(marker) == [
        f"before_start {result.id}", "on_retry OSError OSError",
        f"before_start {result.id}", "on_success ok", "after_return SUCCESS False",
    ]


def test_a_retry_past_max_retries_is_a_failure_for_the_hooks(app: App, marker: str) -> None:
    hook_tasks.hooked_no_retries_left.delay(marker)

    outcome = run_next(app)

    assert isinstance(outcome.decision, DeadLetter)
    assert tasks.lines(marker)[1:] == ["on_failure OSError OSError True", "after_return FAILURE True"]


def test_a_hook_sees_the_running_request(app: App, marker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str | None, bool]] = []
    monkeypatch.setattr(hook_tasks.Recorder, "after_return", lambda self, *args: seen.append(
        (self.request.id, self.request.called_directly)))
    result = hook_tasks.hooked_add.delay(marker, 1, 1)

    run_next(app)

    assert seen == [(result.id, False)]
    assert hook_tasks.hooked_add.request.called_directly, "and only while it runs"


def test_hooks_run_in_the_worker_not_on_a_direct_call(marker: str) -> None:
    assert hook_tasks.hooked_add(marker, 1, 2) == 3

    assert tasks.lines(marker) == ["body"]


def test_the_exception_info_carries_the_exception_its_type_and_formatted_traceback() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        info = ExceptionInfo.of(exc)

    assert (type(info.exception), info.type) == (KeyError, KeyError)
    assert info.traceback.startswith("Traceback (most recent call last)")
    assert str(info) == info.traceback


# -- a hook that raises ------------------------------------------------------------------------------------------


def test_hooks_that_raise_are_logged_with_the_task_id_and_the_success_stands(
    app: App, marker: str, logs: io.StringIO
) -> None:
    result = hook_tasks.broken_hooks_add.delay(marker, 2, 2)

    outcome = run_next(app)

    assert (outcome.outcome, outcome.decision) == ("success", ACK)
    assert result.get(timeout=1) == 4
    assert tasks.lines(marker) == ["body"]
    raised = [e for e in _events(logs) if e["event"] == "task hook raised; the task's outcome stands"]
    assert [(e["hook"], e["task_id"]) for e in raised] == [
        ("before_start", result.id), ("on_success", result.id), ("after_return", result.id)]
    assert "RuntimeError: on_success is broken" in raised[1]["exception"]
    assert app.broker.queue_depth("tests").total == 0, "acked"


def test_a_failure_hook_that_raises_leaves_the_tasks_own_failure(app: App, marker: str, logs: io.StringIO) -> None:
    result = hook_tasks.broken_hooks_fail.delay(marker)

    outcome = run_next(app)

    assert (outcome.outcome, outcome.decision) == ("failure", ACK)
    with pytest.raises(ValueError, match="the task's own failure"):
        result.get(timeout=1)
    assert {e["hook"] for e in _events(logs) if "hook" in e} == {"before_start", "on_failure", "after_return"}


def test_a_retry_hook_that_raises_still_retries(app: App, marker: str, logs: io.StringIO) -> None:
    result = hook_tasks.broken_hooks_flaky.delay(marker)

    assert run_next(app).decision == ACK_NOW
    assert run_next(app, wait_s=2).outcome == "success"

    assert result.get(timeout=1) == "ok"
    assert tasks.lines(marker) == ["attempt 0", "attempt 1"]
    assert [e["hook"] for e in _events(logs) if e.get("hook") == "on_retry"] == ["on_retry"]
