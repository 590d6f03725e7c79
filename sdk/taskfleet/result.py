"""``AsyncResult``: the caller's handle on a task's state and return value."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.errors import ConfigurationError, TaskFailed, TaskRevoked
from taskfleet.states import READY_STATES, State

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.canvas.group_result import GroupResult


class AsyncResult:
    """State and result of the task ``id``. Look one up later with ``AsyncResult(task_id, app=app)``. ``parent``:
    the result of the task (or group) that ran before this one in a workflow, as known where it was sent (a chain's
    step, a chord's header); None otherwise."""

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
    def state(self) -> State:
        """PENDING until a worker reports STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        record = self._record()
        return State.PENDING if record is None else record.state

    def ready(self) -> bool:
        """True once the task has finished (SUCCESS, FAILURE or REVOKED)."""
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state is State.SUCCESS

    def failed(self) -> bool:
        return self.state is State.FAILURE

    @property
    def result(self) -> Any:
        """The return value (SUCCESS), the exception (FAILURE), or None."""
        record = self._record()
        if record is None:
            return None
        if record.state is State.FAILURE:
            return exception_from_record(record)
        return record.result if record.state is State.SUCCESS else None

    @property
    def traceback(self) -> str | None:
        """The task's formatted traceback when it failed."""
        record = self._record()
        return None if record is None else record.traceback

    def get(self, timeout: float | None = None, *, propagate: bool = True) -> Any:
        """Wait up to ``timeout`` seconds (None: forever) for the task to finish and return its value.

        The backend pushes the result to this caller; nothing polls. With ``propagate`` a failed task re-raises
        its exception (its own type when importable here, else ``TaskFailed``) and a revoked one raises
        ``TaskRevoked``; without it the exception is returned. Raises ``ResultTimeout`` when time runs out.
        """
        record = self._backend().wait(self.id, timeout)
        if record.state is State.SUCCESS:
            return record.result
        exc: BaseException
        if record.state is State.REVOKED:
            exc = TaskRevoked(record.exc_message or f"task {self.id} was revoked")
        else:
            exc = exception_from_record(record)
        if propagate:
            raise exc
        return exc

    def forget(self) -> None:
        """Delete the stored result."""
        self._backend().forget(self.id)


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
