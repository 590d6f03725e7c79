"""The event loop of a worker child that serves ``async def`` tasks: one asyncio loop per child, at most
``async_concurrency`` deliveries in progress on it at once, and each task body's time limits and cancellation.

A coroutine body runs as its own asyncio task (``AsyncRunner.run_body``), in a copy of the context of the delivery
that started it (so ``task.request`` is that delivery's), and is known by its task id so that a revoke with
terminate can cancel it (``cancel``, from any thread). Its limits, in seconds:

- soft: ``SoftTimeLimitExceeded`` is raised into the coroutine at the ``await`` it is waiting in (the cancellation
  that interrupts the wait is turned into it, by ``_Guard``); the coroutine may catch it, clean up and return;
- hard: the coroutine is cancelled (``CancelledError`` at its ``await``) and ``run_body`` raises
  ``TimeLimitExceeded``: the task fails as a sync task past its hard limit does, and the child goes on;
- terminate: the same cancellation; ``run_body`` raises ``Terminated``.

Cancellation reaches a coroutine only at an ``await``. One that blocks the loop (``time.sleep``, a sync HTTP call,
a CPU-bound loop) holds every other coroutine of its child until it returns; one that swallows ``CancelledError``
runs on past its hard limit. Both are documented in docs/async.md.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Coroutine, Generator, Iterable
from typing import Any

from taskfleet.errors import SoftTimeLimitExceeded, TimeLimitExceeded
from taskfleet.task import Task
from taskfleet.worker.settings import DEFAULT_ASYNC_CONCURRENCY


def is_async_task(task: Task[Any] | None) -> bool:
    """Whether ``task``'s body is an ``async def`` function (its call returns a coroutine to await)."""
    return task is not None and inspect.iscoroutinefunction(task.fn)


class Terminated(Exception):
    """A running coroutine was cancelled by a revoke with terminate."""


class _Guard:
    """Drives ``coro`` as ``await coro`` does, except that the cancellation a soft time limit sends is thrown into
    the coroutine as ``SoftTimeLimitExceeded`` (and the cancel request withdrawn, so that ``asyncio.timeout`` in the
    coroutine stays right)."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.soft_pending = False

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = self.coro.send(value) if error is None else self.coro.throw(error)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = yield yielded
            except asyncio.CancelledError as exc:
                if self.soft_pending:
                    self.soft_pending = False
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                    error = SoftTimeLimitExceeded("soft time limit exceeded")
                else:
                    error = exc
            except BaseException as exc:  # noqa: BLE001 - passed on into the coroutine, as await does
                error = exc


async def _guarded(guard: _Guard) -> Any:
    return await guard


def _ended(body: asyncio.Task[Any]) -> asyncio.Future[None]:
    """A future done when ``body`` is, whatever its end; unlike ``await body`` it raises nothing, and it costs one
    callback where ``asyncio.wait`` adds a set, a counter and a callback per call."""
    ended: asyncio.Future[None] = body.get_loop().create_future()

    def done(_: asyncio.Task[Any]) -> None:
        if not ended.done():
            ended.set_result(None)

    body.add_done_callback(done)
    return ended


class AsyncRunner:
    """One child's event loop and the coroutine bodies running on it, by task id."""

    def __init__(self, concurrency: int = DEFAULT_ASYNC_CONCURRENCY) -> None:
        if concurrency < 1:
            raise ValueError("async concurrency must be >= 1")
        self.concurrency = concurrency
        self.loop = asyncio.new_event_loop()
        self._bodies: dict[str, tuple[asyncio.Task[Any], list[str]]] = {}
        #: task id -> when its hard limit is up (``time.monotonic``, the loop's clock), for ``overdue``
        self._deadlines: dict[str, float] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.loop.close()

    def running(self) -> int:
        """Coroutine bodies running now."""
        with self._lock:
            return len(self._bodies)

    async def run_body(self, task_id: str, coro: Coroutine[Any, Any, Any], *, soft_limit_s: float | None,
                       hard_limit_s: float | None) -> Any:
        """Await ``coro``, the body of task ``task_id``, under its limits (module notes): its return value, or what
        it raised; ``TimeLimitExceeded`` past the hard limit, ``Terminated`` after ``cancel``. Called in the
        context the body must see (a copy is taken)."""
        guard = _Guard(coro)
        body = asyncio.get_running_loop().create_task(_guarded(guard))
        why: list[str] = []  # "hard" or "terminated": why the body was cancelled
        timers = []
        if soft_limit_s:
            timers.append(self.loop.call_later(soft_limit_s, self._soft, guard, body))
        if hard_limit_s:
            timers.append(self.loop.call_later(hard_limit_s, self._stop, body, why, "hard"))
        with self._lock:
            self._bodies[task_id] = (body, why)
            if hard_limit_s:
                self._deadlines[task_id] = time.monotonic() + hard_limit_s
        try:
            await _ended(body)
        finally:
            for timer in timers:
                timer.cancel()
            with self._lock:
                self._bodies.pop(task_id, None)
                self._deadlines.pop(task_id, None)
        if body.cancelled():
            if why and why[0] == "terminated":
                raise Terminated(f"task {task_id} was terminated by a revoke")
            if why:
                raise TimeLimitExceeded(f"task {task_id} exceeded its hard time limit of {hard_limit_s}s: cancelled")
            raise RuntimeError(f"task {task_id}'s coroutine was cancelled by its own code")
        return body.result()

    def overdue(self, grace_s: float) -> list[str]:
        """The task ids still running ``grace_s`` past their hard limit: the cancellation did not end them, so the
        loop is blocked (a sync call in a coroutine) or the coroutine swallowed it. Thread-safe: the child's
        background thread asks, since a blocked loop cannot."""
        now = time.monotonic()
        with self._lock:
            return [task_id for task_id, deadline in self._deadlines.items() if now >= deadline + grace_s]

    def cancel(self, task_ids: Iterable[str]) -> None:
        """Cancel the running bodies of ``task_ids`` (revoked with terminate). Thread-safe; unknown ids are
        ignored (not running here, or finished)."""
        wanted = list(task_ids)
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._cancel, wanted)

    def _cancel(self, task_ids: list[str]) -> None:
        for task_id in task_ids:
            with self._lock:
                entry = self._bodies.get(task_id)
            if entry is not None:
                self._stop(entry[0], entry[1], "terminated")

    @staticmethod
    def _soft(guard: _Guard, body: asyncio.Task[Any]) -> None:
        if not body.done():
            guard.soft_pending = True
            body.cancel()

    @staticmethod
    def _stop(body: asyncio.Task[Any], why: list[str], reason: str) -> None:
        if not body.done():
            why[:] = [reason]
            body.cancel()

