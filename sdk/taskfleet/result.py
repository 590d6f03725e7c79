"""``AsyncResult``: the caller's handle on a task's state and return value, and on its state updates as they are
stored (``get(on_message=)``, ``updates()``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.errors import ConfigurationError, TaskFailed, TaskRevoked
from taskfleet.states import READY_STATES, State

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.canvas.group_result import GroupResult
    from taskfleet.fleet.protocol import ControlReply


class StateUpdate(TypedDict):
    """One stored state of a task, as ``get(on_message=)`` and ``updates()`` hand it over: Celery's ``on_message``
    keys. ``status`` is the state (a ``State`` member, or the string of a custom state), ``result`` what ``.info``
    reads for it (the meta of a custom state, the return value on SUCCESS, the exception on FAILURE...),
    ``date_done`` when a ready state was stored (UTC), ``children`` always empty (no canvas results here). The last
    five keys are present only when the worker stored them (``App(result_extended=True)``)."""

    task_id: str
    status: State | str
    result: Any
    traceback: str | None
    children: list[Any]
    date_done: datetime | None
    name: NotRequired[str | None]
    args: NotRequired[list[Any] | None]
    kwargs: NotRequired[dict[str, Any] | None]
    queue: NotRequired[str | None]
    retries: NotRequired[int]


class AsyncResult:
    """State and result of the task ``id``. Look one up later with ``AsyncResult(task_id, app=app)``. ``parent``:
    the result of the task (or group) that ran before this one in a workflow, as known where it was sent (a chain's
    step, a chord's header); None otherwise.

    Every property reads the backend afresh (one read each)."""

    def __init__(self, id: str, *, app: App, parent: AsyncResult | GroupResult | None = None) -> None:
        self.id = id
        self.app = app
        self.parent = parent

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _record(self) -> ResultRecord | None:
        return self._backend().get(self.id)

    def _backend(self) -> ResultBackend:
        backend = self.app.backend
        if backend is None:
            raise ConfigurationError("no result backend configured: pass App(result_backend='redis://...')")
        return backend

    @property
    def state(self) -> State | str:
        """PENDING until a worker reports STARTED, RETRY, SUCCESS, FAILURE or REVOKED, or the task stores a state
        of its own (``update_state``: a plain string such as ``"PROGRESS"``)."""
        record = self._record()
        return State.PENDING if record is None else record.state

    @property
    def status(self) -> State | str:
        """The same as ``state`` (Celery's other name for it)."""
        return self.state

    def ready(self) -> bool:
        """True once the task has finished (SUCCESS, FAILURE or REVOKED)."""
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state is State.SUCCESS

    def failed(self) -> bool:
        return self.state is State.FAILURE

    @property
    def result(self) -> Any:
        """The return value (SUCCESS), the exception (FAILURE), or None (unlike Celery's ``result``, which is
        ``info``: read ``info`` for the meta of a custom state)."""
        record = self._record()
        if record is None:
            return None
        if record.state is State.FAILURE:
            return exception_from_record(record)
        return record.result if record.state is State.SUCCESS else None

    @property
    def info(self) -> Any:
        """What the stored state carries, as Celery's ``info``: the ``meta`` of a custom state (``update_state``),
        the return value on SUCCESS, the exception on FAILURE (and on RETRY, the one it retries for, if any),
        ``TaskRevoked`` on REVOKED; None while PENDING or STARTED."""
        record = self._record()
        return None if record is None else info_of(record)

    @property
    def traceback(self) -> str | None:
        """The task's formatted traceback when it failed."""
        record = self._record()
        return None if record is None else record.traceback

    @property
    def date_done(self) -> datetime | None:
        """When the task's final state (SUCCESS, FAILURE, REVOKED) was stored, as a UTC datetime; None before."""
        record = self._record()
        return None if record is None else _date_done(record)

    @property
    def name(self) -> str | None:
        """The task's registered name, once a worker stored a state for it; None before."""
        record = self._record()
        return None if record is None else record.task

    @property
    def args(self) -> list[Any] | None:
        """The task's positional arguments, when stored (the worker stores them with ``App(result_extended=True)``);
        None otherwise."""
        record = self._record()
        return None if record is None else record.args

    @property
    def kwargs(self) -> dict[str, Any] | None:
        """The task's keyword arguments, when stored (``App(result_extended=True)``); None otherwise."""
        record = self._record()
        return None if record is None else record.kwargs

    @property
    def queue(self) -> str | None:
        """The queue the task ran from, when stored (``App(result_extended=True)``); None otherwise."""
        record = self._record()
        return None if record is None else record.queue

    @property
    def retries(self) -> int:
        """How many times the task was retried so far (0 while PENDING)."""
        record = self._record()
        return 0 if record is None else record.retries

    def get(self, timeout: float | None = None, *, propagate: bool = True,
            on_message: Callable[[StateUpdate], None] | None = None) -> Any:
        """Wait up to ``timeout`` seconds (None: forever) for the task to finish and return its value.

        The backend pushes the result to this caller; nothing polls (SQLite polls: see its backend). With
        ``propagate`` a failed task re-raises its exception (its own type when importable here, else
        ``TaskFailed``) and a revoked one raises ``TaskRevoked``; without it the exception is returned. Raises
        ``ResultTimeout`` when time runs out.

        ``on_message`` is called with a ``StateUpdate`` for the state stored when the wait starts, if any, and then
        for each later one, in order (STARTED when tracked, each ``update_state``, RETRY, the final state), before
        this returns; an exception it raises propagates out of ``get``.
        """
        on_update = None if on_message is None else (lambda record: on_message(state_update(record)))
        return outcome_of(self._backend().wait(self.id, timeout, on_update), propagate=propagate)

    async def get_async(self, timeout: float | None = None, *, propagate: bool = True) -> Any:
        """``get`` for asyncio callers: the same value, exception and ``ResultTimeout``, without blocking the event
        loop. Every pending ``get_async`` of the app in this process shares one waiting thread and one backend
        connection (``taskfleet.async_calls``): on Redis the result is pushed to it; SQLite is polled, so a result
        is seen there at most ``MAX_POLL_S`` (50 ms) after it is stored. Cancelling the await stops the wait at
        once."""
        from taskfleet.async_calls import wait_ready  # here: sync callers never load it

        self._backend()  # ConfigurationError now, as get() raises it, when there is no backend
        return outcome_of(await wait_ready(self.app, self.id, timeout), propagate=propagate)

    def wait(self, timeout: float | None = None, *, propagate: bool = True,
             on_message: Callable[[StateUpdate], None] | None = None) -> Any:
        """The same as ``get`` (Celery's other name for it)."""
        return self.get(timeout, propagate=propagate, on_message=on_message)

    def updates(self, timeout: float | None = None) -> Iterator[StateUpdate]:
        """Iterate over the task's state updates as they are stored, as ``get(on_message=)`` sees them: the state
        stored when the iteration starts (if any), then each later one; ends after the final state (which is
        yielded, not raised). ``timeout`` (seconds, None: forever) bounds the whole iteration: ``ResultTimeout``
        when it runs out first. The backend is not read until the first ``next()``."""
        for record in self._backend().updates(self.id, timeout):
            yield state_update(record)

    def forget(self) -> None:
        """Delete the stored result."""
        self._backend().forget(self.id)

    def revoke(self, *, terminate: bool = False, signal: str = "SIGTERM", expires_s: float | None = None,
               reply: bool = False, timeout: float = 1.0) -> list[ControlReply]:
        """Celery's ``AsyncResult.revoke``: this task never runs (it ends REVOKED); with ``terminate``, the worker
        running it sends its child ``signal`` (then SIGKILL after a grace). Remembered by the fleet for
        ``expires_s`` (default: the result expiry), so a worker started later honours it (``app.control.revoke``)."""
        return self.app.control.revoke(self.id, terminate=terminate, signal=signal, expires_s=expires_s,
                                       reply=reply, timeout=timeout)


def outcome_of(record: ResultRecord, *, propagate: bool) -> Any:
    """What ``get`` returns (or raises, with ``propagate``) for a ready ``record``."""
    if record.state is State.SUCCESS:
        return record.result
    exc: BaseException
    if record.state is State.REVOKED:
        exc = TaskRevoked(record.exc_message or f"task {record.task_id} was revoked")
    else:
        exc = exception_from_record(record)
    if propagate:
        raise exc
    return exc


def info_of(record: ResultRecord) -> Any:
    """``AsyncResult.info`` of a stored record."""
    state = record.state
    if state is State.SUCCESS:
        return record.result
    if state is State.FAILURE or (state is State.RETRY and record.exc_type):
        return exception_from_record(record)
    if state is State.REVOKED:
        return TaskRevoked(record.exc_message or f"task {record.task_id} was revoked")
    return record.result


def state_update(record: ResultRecord) -> StateUpdate:
    """The ``StateUpdate`` of a stored record."""
    update: StateUpdate = {
        "task_id": record.task_id, "status": record.state, "result": info_of(record), "traceback": record.traceback,
        "children": [], "date_done": _date_done(record),
    }
    if record.extended is not None:
        update["name"], update["args"], update["kwargs"] = record.task, record.args, record.kwargs
        update["queue"], update["retries"] = record.queue, record.retries
    return update


def _date_done(record: ResultRecord) -> datetime | None:
    return datetime.fromtimestamp(record.date_done, UTC) if record.ready and record.date_done else None


def exception_from_record(record: ResultRecord) -> BaseException:
    """Rebuild a task's exception: its own type when importable and constructible, else ``TaskFailed``.
    The remote traceback is attached as a note."""
    exc_type = record.exc_type or "Exception"
    message = record.exc_message or ""
    exc: BaseException = TaskFailed(exc_type, message, record.traceback)
    module_name, _, qualname = exc_type.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name or "builtins")
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, type) and issubclass(obj, Exception):
            exc = obj(*record.exc_args) if record.exc_args is not None else obj(message)
    except Exception:  # noqa: BLE001, S110 - not importable or not constructible here: TaskFailed it is
        pass
    if record.traceback and not isinstance(exc, TaskFailed):
        exc.add_note(f"Remote traceback:\n{record.traceback}")
    return exc
