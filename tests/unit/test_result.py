"""Specification of ``AsyncResult`` and of rebuilding a task's exception (taskfleet.result)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from taskfleet import App, AsyncResult, ResultTimeout, State, TaskFailed, TaskRevoked
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.result import exception_from_record
from tests.tasks import InsufficientFunds

REMOTE_TRACEBACK = 'Traceback (most recent call last):\n  File "worker.py", line 1\nValueError: bad amount\n'


@pytest.fixture
def results_app() -> Iterator[App]:
    """An App with only the stub (in-memory) result backend (no broker needed to read results)."""
    app = App("r", result_backend="memory://")
    yield app
    app.close()


@pytest.fixture
def backend(results_app: App) -> ResultBackend:
    backend = results_app.backend
    assert backend is not None
    return backend


def _record(state: State, **fields: Any) -> ResultRecord:
    return ResultRecord(task_id="t1", state=state, task="r.job", **fields)


def _failure(exc_type: str, message: str = "bad amount", **fields: Any) -> ResultRecord:
    return _record(State.FAILURE, exc_type=exc_type, exc_message=message, **fields)


# -- exception_from_record ---------------------------------------------------------------------------------------


def test_a_builtin_exception_is_rebuilt_with_its_args() -> None:
    exc = exception_from_record(_failure("builtins.ValueError", "bad amount", exc_args=["bad amount", 42]))

    assert type(exc) is ValueError
    assert exc.args == ("bad amount", 42)


def test_an_exception_type_without_a_module_is_looked_up_in_builtins() -> None:
    exc = exception_from_record(_failure("KeyError", exc_args=["k"]))

    assert type(exc) is KeyError


def test_without_args_the_exception_is_rebuilt_from_its_message() -> None:
    exc = exception_from_record(_failure("builtins.RuntimeError", "it broke"))

    assert type(exc) is RuntimeError
    assert exc.args == ("it broke",)


def test_a_user_exception_is_rebuilt_as_its_own_type() -> None:
    exc = exception_from_record(
        _failure("tests.tasks.InsufficientFunds", "cannot withdraw 5", exc_args=["cannot withdraw 5"])
    )

    assert isinstance(exc, InsufficientFunds)
    assert str(exc) == "cannot withdraw 5"


@pytest.mark.parametrize(
    "exc_type",
    [
        pytest.param("nowhere.at_all.Missing", id="module not importable"),
        pytest.param("tests.tasks.NoSuchError", id="attribute missing"),
        pytest.param("os.getcwd", id="not a type"),
        pytest.param("builtins.dict", id="not an exception"),
        pytest.param("builtins.KeyboardInterrupt", id="not an Exception subclass"),
    ],
)
def test_an_exception_that_cannot_be_rebuilt_here_falls_back_to_task_failed(exc_type: str) -> None:
    exc = exception_from_record(_failure(exc_type, "it broke", traceback=REMOTE_TRACEBACK))

    assert isinstance(exc, TaskFailed)
    assert (exc.exc_type, exc.message, exc.traceback) == (exc_type, "it broke", REMOTE_TRACEBACK)
    assert str(exc) == f"{exc_type}: it broke"


def test_an_exception_whose_args_do_not_fit_its_constructor_falls_back_to_task_failed() -> None:
    exc = exception_from_record(_failure("builtins.UnicodeDecodeError", "boom", exc_args=["only one"]))

    assert isinstance(exc, TaskFailed)
    assert exc.exc_type == "builtins.UnicodeDecodeError"


def test_a_rebuilt_exception_carries_the_remote_traceback_as_a_note() -> None:
    exc = exception_from_record(_failure("builtins.ValueError", exc_args=["bad amount"], traceback=REMOTE_TRACEBACK))

    assert exc.__notes__ == [f"Remote traceback:\n{REMOTE_TRACEBACK}"]


def test_a_rebuilt_exception_without_a_traceback_has_no_note() -> None:
    exc = exception_from_record(_failure("builtins.ValueError", exc_args=["bad amount"]))

    assert not hasattr(exc, "__notes__")


# -- AsyncResult -------------------------------------------------------------------------------------------------


def test_a_task_the_backend_does_not_know_is_pending(results_app: App) -> None:
    result = AsyncResult("t1", app=results_app)

    assert result.state is State.PENDING
    assert (result.ready(), result.successful(), result.failed()) == (False, False, False)
    assert (result.result, result.traceback) == (None, None)


@pytest.mark.parametrize(
    ("state", "ready"),
    [
        (State.STARTED, False),
        (State.RETRY, False),
        (State.SUCCESS, True),
        (State.FAILURE, True),
        (State.REVOKED, True),
    ],
)
def test_state_and_ready_follow_the_stored_record(
    results_app: App, backend: ResultBackend, state: State, ready: bool
) -> None:
    backend.store(_record(state))

    result = AsyncResult("t1", app=results_app)

    assert result.state is state
    assert result.ready() is ready


def test_a_successful_task_gives_its_return_value(results_app: App, backend: ResultBackend) -> None:
    backend.store(_record(State.SUCCESS, result={"total": 5}))

    result = AsyncResult("t1", app=results_app)

    assert (result.successful(), result.failed()) == (True, False)
    assert result.result == {"total": 5}
    assert result.get(timeout=1) == {"total": 5}


def test_a_failed_task_gives_its_exception_and_traceback(results_app: App, backend: ResultBackend) -> None:
    backend.store(_failure("builtins.ValueError", exc_args=["bad amount"], traceback=REMOTE_TRACEBACK))

    result = AsyncResult("t1", app=results_app)

    assert (result.successful(), result.failed()) == (False, True)
    assert isinstance(result.result, ValueError)
    assert result.traceback == REMOTE_TRACEBACK


@pytest.mark.parametrize("state", [State.STARTED, State.RETRY, State.REVOKED])
def test_an_unfinished_or_revoked_task_has_no_result_value(
    results_app: App, backend: ResultBackend, state: State
) -> None:
    backend.store(_record(state, result="leftover"))

    assert AsyncResult("t1", app=results_app).result is None


def test_get_re_raises_the_tasks_exception(results_app: App, backend: ResultBackend) -> None:
    backend.store(_failure("tests.tasks.InsufficientFunds", "cannot withdraw 5", exc_args=["cannot withdraw 5"]))

    with pytest.raises(InsufficientFunds, match="cannot withdraw 5"):
        AsyncResult("t1", app=results_app).get(timeout=1)


def test_get_without_propagate_returns_the_exception(results_app: App, backend: ResultBackend) -> None:
    backend.store(_failure("builtins.ValueError", exc_args=["bad amount"]))

    exc = AsyncResult("t1", app=results_app).get(timeout=1, propagate=False)

    assert isinstance(exc, ValueError)
    assert exc.args == ("bad amount",)


def test_get_of_a_revoked_task_raises_task_revoked(results_app: App, backend: ResultBackend) -> None:
    backend.store(_record(State.REVOKED, exc_message="expired at 1.0 before it started"))

    with pytest.raises(TaskRevoked, match=r"expired at 1\.0"):
        AsyncResult("t1", app=results_app).get(timeout=1)


def test_get_of_a_revoked_task_without_propagate_returns_task_revoked(
    results_app: App, backend: ResultBackend
) -> None:
    backend.store(_record(State.REVOKED))

    exc = AsyncResult("t1", app=results_app).get(timeout=1, propagate=False)

    assert isinstance(exc, TaskRevoked)
    assert str(exc) == "task t1 was revoked"


@pytest.mark.parametrize("stored", [None, State.STARTED, State.RETRY])
def test_get_of_an_unfinished_task_times_out_with_result_timeout(
    results_app: App, backend: ResultBackend, stored: State | None
) -> None:
    if stored is not None:
        backend.store(_record(stored))

    with pytest.raises(ResultTimeout) as caught:
        AsyncResult("t1", app=results_app).get(timeout=0.05)

    assert isinstance(caught.value, TimeoutError)


def test_forget_deletes_the_stored_result(results_app: App, backend: ResultBackend) -> None:
    backend.store(_record(State.SUCCESS, result=1))
    result = AsyncResult("t1", app=results_app)

    result.forget()

    assert result.state is State.PENDING


def test_results_with_the_same_id_are_equal(results_app: App) -> None:
    assert AsyncResult("t1", app=results_app) == AsyncResult("t1", app=results_app)
    assert AsyncResult("t1", app=results_app) != AsyncResult("t2", app=results_app)
    assert len({AsyncResult("t1", app=results_app), AsyncResult("t1", app=results_app)}) == 1
