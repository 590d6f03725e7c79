"""Awaitable sends and result waits for asyncio callers (FastAPI, aiohttp): ``await task.delay_async(...)``,
``await task.send_async(args, kwargs, countdown=...)``, ``await app.send_async(name, ...)`` and
``await result.get_async(timeout=...)``.

None of them blocks the event loop, and none costs a thread or a connection per call:

- A send runs the blocking publish (``App.send``, ``Task.apply_async``: the same message, routing, retries and
  RabbitMQ confirm as the sync call) on the app's one small thread pool (``SEND_THREADS`` threads), in the caller's
  ``contextvars`` context (so a tracing span of the caller is the parent of the send's).
- A wait hands its task id to the app's one ``ResultWaiter``: a thread that waits for every pending id at once
  (``ResultBackend.wait_any``) and resolves each caller's asyncio future with ``loop.call_soon_threadsafe``. On
  Redis, one connection stays subscribed to the result channel of every pending id, so a result is pushed about
  one round trip after it is stored (``taskfleet.backends.redis_waits``). Elsewhere (SQLite) it reads every pending
  id in one query (``ResultBackend.get_many``) as soon as an id is added, then polls, first after ``MIN_POLL_S``
  and backing off to ``MAX_POLL_S`` while nothing finishes, so a result is seen at most about ``MAX_POLL_S`` after
  it is stored, whatever the number of waits. ``watch`` wakes the thread through a socket pair, so a new id is
  taken at once. The thread exits ``IDLE_EXIT_S`` after its last pending id (on Redis, unsubscribed first).

A wait that is cancelled or times out removes its id at once: nothing of it is left in the waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import socket
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from taskfleet.backends.base import ResultRecord
from taskfleet.errors import ResultTimeout

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.canvas.primitives import Node

T = TypeVar("T")

#: Threads per app that run async callers' publishes (each publish holds one while the broker stores the message).
SEND_THREADS = 4
#: First pause of the result waiter after an id is added or a result is found (seconds); doubled after each read.
MIN_POLL_S = 0.002
#: Longest pause of the result waiter between two reads (seconds): how late, at most, a wait on a polled backend
#: (SQLite) sees a stored result. On Redis, only how often its thread wakes while nothing is pushed.
MAX_POLL_S = 0.05
#: How long the result waiter's thread stays after its last pending id (seconds) before it exits.
IDLE_EXIT_S = 5.0


class SendOptions(TypedDict, total=False):
    """The keyword options of ``App.send`` (and so of ``App.send_async``), with the same meaning."""

    countdown: float | None
    eta: datetime | None
    expires: float | datetime | None
    priority: int | None
    queue: str | None
    task_id: str | None
    headers: dict[str, Any] | None
    serializer: str | None
    compression: str | None
    retry: bool
    retry_policy: dict[str, Any] | None


class ApplyOptions(SendOptions, total=False):
    """The keyword options of ``Task.apply_async`` (and so of ``Task.send_async``): ``SendOptions`` and links."""

    link: Node | list[Node] | None
    link_error: Node | list[Node] | None


@dataclass(eq=False)
class _Waiting:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[ResultRecord]


class ResultWaiter:
    """One thread that waits for the results of every pending ``get_async`` of an app (module docstring).
    Thread-safe; ``watch`` and ``forget`` never block on the backend."""

    def __init__(self, app: App) -> None:
        self._app = weakref.ref(app)
        self._cond = threading.Condition()
        self._pending: dict[str, list[_Waiting]] = {}
        self._added = False  # an id came since the last read: read again at once
        self._thread: threading.Thread | None = None
        #: Written to by ``watch``, so that the thread, waiting in ``ResultBackend.wait_any``, takes the new id.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def pending_count(self) -> int:
        """How many waits are pending (each ``watch`` not yet resolved, cancelled or forgotten)."""
        with self._cond:
            return sum(len(waiting) for waiting in self._pending.values())

    def watch(self, task_id: str, loop: asyncio.AbstractEventLoop) -> asyncio.Future[ResultRecord]:
        """A future of ``loop`` that gets ``task_id``'s ready record (or the error reading it raised)."""
        waiting = _Waiting(loop, loop.create_future())
        with self._cond:
            self._pending.setdefault(task_id, []).append(waiting)
            self._added = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="taskfleet-result-waiter", daemon=True)
                self._thread.start()
            self._cond.notify()
        with contextlib.suppress(BlockingIOError):  # full: the thread has wake-ups enough to read
            self._wake_w.send(b"\0")
        return waiting.future

    def forget(self, task_id: str, future: asyncio.Future[ResultRecord]) -> None:
        """Stop waiting for ``future`` (a no-op when it was resolved already)."""
        with self._cond:
            waiting = [w for w in self._pending.get(task_id, ()) if w.future is not future]
            if waiting:
                self._pending[task_id] = waiting
            elif self._pending.pop(task_id, None) is not None:
                with contextlib.suppress(BlockingIOError):  # the thread drops the id now (Redis: unsubscribes)
                    self._wake_w.send(b"\0")

    def _run(self) -> None:
        pause_s = MIN_POLL_S
        while True:
            with self._cond:
                idle = not self._pending
            if idle:
                self._wait_for([], 0.0)  # Redis: unsubscribes from everything before idling
                with self._cond:
                    if not self._cond.wait_for(lambda: bool(self._pending), IDLE_EXIT_S):
                        self._thread = None
                        return
            _drain(self._wake_r)  # before the ids are read: a watch after this wakes the wait below
            with self._cond:
                added, self._added = self._added, False
                task_ids = list(self._pending)
            if added:
                pause_s = MIN_POLL_S
            found = self._wait_for(task_ids, pause_s)
            pause_s = MIN_POLL_S if found else min(pause_s * 2, MAX_POLL_S)

    def _wait_for(self, task_ids: list[str], timeout_s: float) -> bool:
        """One ``ResultBackend.wait_any`` for ``task_ids``; resolves the waits of those ready and returns True when
        one was. An error is handed to every wait, as ``get()`` would raise it."""
        app = self._app()
        backend = None if app is None else app.backend
        try:
            if backend is None:
                raise RuntimeError("the app of these waits is gone, or has no result backend")
            records = backend.wait_any(task_ids, timeout_s, self._wake_r)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, as get() would raise it
            for task_id in task_ids:
                self._settle(task_id, exc)
            return bool(task_ids)
        for record in records:
            self._settle(record.task_id, record)
        return bool(records)

    def _settle(self, task_id: str, outcome: ResultRecord | Exception) -> None:
        with self._cond:
            waiting = self._pending.pop(task_id, [])
        for each in waiting:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                each.loop.call_soon_threadsafe(_resolve, each.future, outcome)


def _drain(wake: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError):
        while wake.recv(4096):
            pass


def _resolve(future: asyncio.Future[ResultRecord], outcome: ResultRecord | Exception) -> None:
    if future.done():  # cancelled meanwhile
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@dataclass
class _AppCalls:
    """What an app's async callers share in one process: the send threads and the result waiter."""

    pid: int
    sender: ThreadPoolExecutor
    waiter: ResultWaiter


_CALLS: weakref.WeakKeyDictionary[App, _AppCalls] = weakref.WeakKeyDictionary()
_CALLS_LOCK = threading.Lock()


def _calls(app: App) -> _AppCalls:
    pid = os.getpid()
    with _CALLS_LOCK:
        calls = _CALLS.get(app)
        if calls is None or calls.pid != pid:  # a forked child starts its own threads
            calls = _CALLS[app] = _AppCalls(
                pid, ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="taskfleet-send-async"),
                ResultWaiter(app))
        return calls


def result_waiter(app: App) -> ResultWaiter:
    """``app``'s result waiter in this process (created on first use)."""
    return _calls(app).waiter


async def run_send(app: App, send: Callable[[], T]) -> T:
    """Run the blocking ``send`` on ``app``'s send threads, in the caller's context, and return what it returns.
    Cancelling the await does not take back a publish already started."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_calls(app).sender, functools.partial(context.run, send))


async def wait_ready(app: App, task_id: str, timeout_s: float | None) -> ResultRecord:
    """The ready record of ``task_id`` (SUCCESS, FAILURE, REVOKED), awaited through ``app``'s result waiter; raises
    ``ResultTimeout``, as ``get()`` does, when ``timeout_s`` (None: forever) runs out first."""
    waiter = _calls(app).waiter
    future = waiter.watch(task_id, asyncio.get_running_loop())
    scope = asyncio.timeout(timeout_s)
    try:
        async with scope:
            return await future
    except TimeoutError:
        if not scope.expired():  # not ours: raised by the backend
            raise
        raise ResultTimeout(f"task {task_id} not ready after {timeout_s}s") from None
    finally:
        waiter.forget(task_id, future)
