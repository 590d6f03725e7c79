"""Around one run of a task in a worker child: its class's hooks (``taskfleet.hooks``) and the task signals
(``taskfleet.signals``), called in Celery's order by the ``Executor``:

``task_prerun`` · (STARTED stored) · ``before_start`` · the task body · its outcome stored · then on success
``on_success``, ``task_success``, ``after_return``; on failure ``on_failure``, ``task_failure``, ``after_return``;
on a retry (next attempt published, RETRY stored) ``on_retry``, ``task_retry`` · ``task_postrun`` last, always.

Every hook and receiver runs after the outcome is stored and before the message is settled: what it raises is
logged (the hook's name and the task id) and changes neither the stored outcome nor what becomes of the message.

A plain task (a class that overrides no hook, no receiver connected to a task signal) gets no ``TaskRun`` at all
(``task_run`` returns None): the executor skips every step, and nothing is built for hooks or signals.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from taskfleet.errors import Retry
from taskfleet.hooks import ExceptionInfo, TaskHooks
from taskfleet.signals import send, task_failure, task_postrun, task_prerun, task_retry, task_success
from taskfleet.states import State
from taskfleet.task import Request, Task, enter_request, leave_request
from taskfleet.worker.logging import get_logger

log = get_logger("taskfleet.worker")

_HOOKS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


def task_run(task: Task[Any], request: Request) -> TaskRun | None:
    """The ``TaskRun`` of one run of ``task``, or None when its class overrides no hook and no task signal has a
    receiver (checked at each run, so a receiver connected later counts)."""
    if (overrides_hooks(type(task)) or task_prerun.receivers or task_postrun.receivers or task_success.receivers
            or task_failure.receivers or task_retry.receivers):
        return TaskRun(task, request)
    return None


def overrides_hooks(cls: type[TaskHooks]) -> bool:
    """True when ``cls`` overrides at least one hook of ``TaskHooks`` (remembered per class)."""
    found = _overrides.get(cls)
    if found is None:
        found = _overrides[cls] = any(getattr(cls, name) is not getattr(TaskHooks, name) for name in _HOOKS)
    return found


_overrides: dict[type[TaskHooks], bool] = {}


class TaskRun:
    """The hooks and signals of one run of ``task`` with ``request``; remembers the outcome for ``task_postrun``."""

    __slots__ = ("_token", "request", "retval", "state", "task")

    def __init__(self, task: Task[Any], request: Request) -> None:
        self.task = task
        self.request = request
        self._token: contextvars.Token[Request | None] | None = None
        #: The stored outcome, for ``task_postrun``: None until one is stored (and when none could be).
        self.state: State | None = None
        self.retval: Any = None

    def prerun(self) -> None:
        """``task_prerun``, before anything of the run. From here to ``postrun`` the task's ``request`` is this
        run's, so hooks and receivers can read ``task.request``."""
        self._token = enter_request(self.request)
        if task_prerun.receivers:
            r = self.request
            send(task_prerun, self.task, task_id=r.id, task=self.task, args=r.args, kwargs=r.kwargs)

    def before_start(self) -> None:
        """The ``before_start`` hook, just before the body runs."""
        r = self.request
        self._hook("before_start", self.task.before_start, r.id, r.args, r.kwargs)

    def succeeded(self, retval: Any) -> None:
        """After SUCCESS is stored: ``on_success``, ``task_success``, ``after_return``."""
        r, task = self.request, self.task
        self.state, self.retval = State.SUCCESS, retval
        self._hook("on_success", task.on_success, retval, r.id, r.args, r.kwargs)
        if task_success.receivers:
            send(task_success, task, result=retval)
        self._hook("after_return", task.after_return, State.SUCCESS, retval, r.id, r.args, r.kwargs, None)

    def failed(self, exc: BaseException, traceback: str | None) -> None:
        """After FAILURE is stored: ``on_failure``, ``task_failure``, ``after_return``. ``traceback`` is ``exc``'s,
        formatted (as stored)."""
        r, task = self.request, self.task
        self.state, self.retval = State.FAILURE, exc
        einfo = ExceptionInfo.of(exc, traceback)
        self._hook("on_failure", task.on_failure, exc, r.id, r.args, r.kwargs, einfo)
        if task_failure.receivers:
            send(task_failure, task, task_id=r.id, exception=exc, args=r.args, kwargs=r.kwargs,
                 traceback=exc.__traceback__, einfo=einfo)
        self._hook("after_return", task.after_return, State.FAILURE, exc, r.id, r.args, r.kwargs, einfo)

    def retried(self, reason: Retry, traceback: str | None) -> None:
        """After the next attempt is published and RETRY stored: ``on_retry``, ``task_retry``. ``traceback`` is
        that of ``reason.exc``, formatted (as stored), when there is one."""
        r, task = self.request, self.task
        self.state, self.retval = State.RETRY, reason
        exc = reason.exc
        einfo = ExceptionInfo.of(exc, traceback) if exc is not None else ExceptionInfo.of(reason)
        self._hook("on_retry", task.on_retry, exc, r.id, r.args, r.kwargs, einfo)
        if task_retry.receivers:
            send(task_retry, task, request=r, reason=reason, einfo=einfo)

    def postrun(self) -> None:
        """``task_postrun``, last, whatever happened (``state`` None: no outcome was stored)."""
        try:
            if task_postrun.receivers:
                r = self.request
                send(task_postrun, self.task, task_id=r.id, task=self.task, args=r.args, kwargs=r.kwargs,
                     retval=self.retval, state=self.state)
        finally:
            if self._token is not None:
                leave_request(self._token)

    def _hook(self, name: str, hook: Callable[..., object], *args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:  # a hook never changes the task's outcome: logged, and on we go
            log.error("task hook raised; the task's outcome stands", task_id=self.request.id, task=self.task.name,
                      hook=name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)

