"""The hooks of a task class: Celery's ``before_start``, ``on_success``, ``on_failure``, ``on_retry`` and
``after_return``, which a ``Task`` subclass overrides (``@app.task(base=MyTask)``, ``App(task_cls=MyTask)``).

A worker child calls them around each run of the task (``taskfleet.worker.lifecycle``), after the outcome is
stored; an exception a hook raises is logged with the task id and the hook's name and changes nothing else. See
docs/progress-hooks-signals.md.
"""

from __future__ import annotations

import traceback as tb
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ExceptionInfo:
    """An exception with its formatted traceback: what ``on_failure``, ``on_retry`` and ``after_return`` receive
    as ``einfo`` (Celery's ``ExceptionInfo`` has the same three attributes)."""

    exception: BaseException
    type: type[BaseException]
    traceback: str  # the formatted traceback, as ``AsyncResult.traceback`` shows it

    @classmethod
    def of(cls, exc: BaseException, traceback: str | None = None) -> ExceptionInfo:
        """``exc`` with ``traceback``, or with its own formatted when None."""
        text = traceback if traceback is not None else "".join(tb.format_exception(exc))
        return cls(exception=exc, type=type(exc), traceback=text)

    def __str__(self) -> str:
        return self.traceback


class TaskHooks:
    """The hook methods of ``Task``: each does nothing here. ``args`` is the task's positional arguments (a
    tuple), ``kwargs`` its keyword arguments. They run in the worker child, not when a task is called directly."""

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Called just before the task body runs (after ``task_prerun``)."""

    def on_success(self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Called after the task returned ``retval`` and its SUCCESS was stored."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                   einfo: ExceptionInfo) -> None:
        """Called after the task failed with ``exc`` and its FAILURE was stored: an exception, a soft time limit,
        a result that could not be stored (``EncodeError``), or a retry past ``max_retries`` (``exc`` is then the
        exception it retried for, or ``MaxRetriesExceeded``)."""

    def on_retry(self, exc: BaseException | None, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                 einfo: ExceptionInfo) -> None:
        """Called after the task asked to be retried (``self.retry`` or ``autoretry_for``), once the next attempt
        is published and RETRY stored. ``exc`` is the exception it retries for (None if ``self.retry()`` named
        none); ``einfo`` describes ``exc``, or the ``Retry`` raised when there is none."""

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                     einfo: ExceptionInfo | None) -> None:
        """Called last, after ``on_success`` (``status`` SUCCESS, ``retval`` the return value, ``einfo`` None) or
        ``on_failure`` (FAILURE, ``retval`` the exception, ``einfo`` its info). Not after a retry, as in Celery."""
