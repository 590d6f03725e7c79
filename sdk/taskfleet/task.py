"""``Task``: a registered function that can be called in-process or sent to workers."""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypedDict, TypeVar, Unpack

from taskfleet.backends.base import ResultRecord
from taskfleet.errors import ConfigurationError, Retry
from taskfleet.hooks import TaskHooks
from taskfleet.message import MAX_PRIORITY, MIN_PRIORITY
from taskfleet.rates import parse_rate
from taskfleet.retry import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_BACKOFF_MAX_S, DEFAULT_RETRY_DELAY_S
from taskfleet.routing import resolve
from taskfleet.signature import Signature
from taskfleet.states import READY_STATES, to_state

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.async_calls import ApplyOptions
    from taskfleet.canvas.primitives import Chunks, Node
    from taskfleet.result import AsyncResult

R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """Per-task settings from ``@app.task(...)``. Times are in seconds.

    The one definition of the task options: their names, types, defaults, meaning and checks. ``@app.task`` takes
    ``name=`` and the other fields as ``**options: Unpack[TaskOptionsKwargs]``, which lists the same names and
    types for type checkers (``tests/unit/test_task_options.py`` keeps the two in step)."""

    #: The name messages carry and workers look the task up by; default ``"<app name>.<function name>"``. Unique in
    #: the app: another function under the same name raises ``ConfigurationError``.
    name: str
    queue: str | None = None  # None: the app's default queue
    #: Default ``apply_async(priority=)``, 0-9 (else ``ConfigurationError``): workers take a queue's ready messages
    #: highest priority first.
    priority: int = 0
    max_retries: int | None = DEFAULT_MAX_RETRIES  # None: retry forever
    #: Exception types (subclasses included) that retry the task under its retry policy, as ``self.retry(exc=)``
    #: would, instead of failing it; once ``max_retries`` is used up the task FAILS with that exception.
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: bool | float = False  # True: 1 s base, doubled each retry; a number: that base
    #: Cap, in seconds, on the exponential ``retry_backoff`` wait (before jitter); unused without ``retry_backoff``.
    retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX_S
    #: With ``retry_backoff``, pick each wait uniformly in [wait/2, wait] so tasks that failed together do not retry
    #: in lock-step; unused without ``retry_backoff``.
    retry_jitter: bool = True
    default_retry_delay: float = DEFAULT_RETRY_DELAY_S  # used when there is no backoff
    time_limit: float | None = None  # hard: the worker child is killed, the task FAILS with TimeLimitExceeded
    soft_time_limit: float | None = None  # SoftTimeLimitExceeded is raised inside the task
    expires: float | None = None  # default for apply_async(expires=)
    #: At most this many starts of this task per time unit in each worker, shared by its children, as in Celery:
    #: ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number (per second); None: no limit. A message over the limit is
    #: published again for its slot and acked, so it never holds a prefetch slot (``taskfleet.worker.rate_limiter``);
    #: ``app.control.rate_limit`` changes it at runtime.
    rate_limit: str | None = None
    #: Store no state at all for this task (its ``AsyncResult`` stays PENDING). A redelivered message whose ack was
    #: lost then runs again, since there is no stored final state to recognise it by.
    ignore_result: bool = False
    #: Store STARTED when a worker begins the task. Off by default (as in Celery): it costs every task a second
    #: result write, and a caller waiting on the result one more wake-up.
    track_started: bool = False
    bind: bool = False  # the function receives the Task as its first argument

    def __post_init__(self) -> None:
        object.__setattr__(self, "autoretry_for", tuple(self.autoretry_for))  # a list is taken as a tuple
        if not (MIN_PRIORITY <= self.priority <= MAX_PRIORITY):
            raise ConfigurationError(f"priority must be {MIN_PRIORITY}-{MAX_PRIORITY}")
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0 or None")
        for limit in (self.time_limit, self.soft_time_limit):
            if limit is not None and limit <= 0:
                raise ConfigurationError("time limits must be > 0 seconds")
        if self.time_limit and self.soft_time_limit and self.soft_time_limit >= self.time_limit:
            raise ConfigurationError("soft_time_limit must be smaller than time_limit")
        parse_rate(self.rate_limit)  # ConfigurationError for a bad one, at declaration
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.autoretry_for):
            raise ConfigurationError("autoretry_for must be a tuple of exception types")


class TaskOptionsKwargs(TypedDict, total=False):
    """The keyword arguments of ``@app.task(...)`` besides ``name``: the other fields of ``TaskOptions``, with the
    same types, each optional (defaults, units and meaning are ``TaskOptions``'s)."""

    queue: str | None
    priority: int
    max_retries: int | None
    autoretry_for: tuple[type[BaseException], ...]
    retry_backoff: bool | float
    retry_backoff_max: float
    retry_jitter: bool
    default_retry_delay: float
    time_limit: float | None
    soft_time_limit: float | None
    expires: float | None
    rate_limit: str | None
    ignore_result: bool
    track_started: bool
    bind: bool


#: The option names ``@app.task`` takes in ``**options`` (every ``TaskOptions`` field but ``name``).
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(TaskOptions) if f.name != "name")


def check_option_names(options: Mapping[str, object]) -> None:
    """``TypeError`` naming each key of ``options`` that is not a task option (as for an unknown keyword)."""
    unknown = [key for key in options if key not in OPTION_NAMES]
    if unknown:
        raise TypeError(f"@app.task got unknown option(s) {', '.join(map(repr, unknown))}; the options are "
                        f"name, base, {', '.join(OPTION_NAMES)} (see TaskOptions)")


def check_task_class(cls: object, where: str) -> type[Task[Any]]:
    """``cls`` when it is ``Task`` or a subclass of it; else ``ConfigurationError`` naming ``where``."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigurationError(f"{where} must be a subclass of taskfleet.Task, got {cls!r}")
    return cls


@dataclass(frozen=True, kw_only=True)
class Request:
    """What a running task knows about its own invocation (``self.request`` with ``bind=True``)."""

    id: str | None = None
    task: str = ""
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    retries: int = 0
    queue: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    eta: float | None = None
    expires: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    delivery_count: int = 0
    called_directly: bool = True


_DIRECT_CALL = Request()
_current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar("taskfleet_request", default=None)


def enter_request(request: Request) -> contextvars.Token[Request | None]:
    """Make ``request`` what ``Task.request`` returns in this context until ``leave_request`` (a worker keeps it
    set while a task's hooks and signal receivers run, as Celery does)."""
    return _current_request.set(request)


def leave_request(token: contextvars.Token[Request | None]) -> None:
    """Undo the ``enter_request`` that returned ``token``."""
    _current_request.reset(token)


class Task(TaskHooks, Generic[R]):
    """A task function registered with an ``App``. Calling it runs it here; ``delay`` sends it to a worker.

    A subclass (``@app.task(base=...)``, ``App(task_cls=...)``) may override the hooks of ``TaskHooks`` and
    ``__call__``: a worker runs each task through ``__call__``, which runs ``run``, so a ``__call__`` that wraps
    ``self.run(*args, **kwargs)`` (in a framework's app context, say) wraps every run."""

    def __init__(self, app: App, fn: Callable[..., R], options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.options = options
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def queue(self) -> str:
        """The queue a call without ``queue=`` goes to: the app's route for this task (a router function asked
        with no arguments), else the task's own ``queue``, else the app's default queue."""
        return resolve(self.app, self.name, (), {}).queue

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue or self.app.settings.default_queue}>"

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Run the task in this process, now (no message, no worker): ``self.run(*args, **kwargs)``. The worker runs
        each task through this too, so a subclass may wrap it."""
        return self.run(*args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> R:
        """The task's body: the registered function, given this task as its first argument when ``bind=True``."""
        if self.options.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    @property
    def request(self) -> Request:
        """The invocation being executed in this context (``called_directly`` when not run by a worker)."""
        return _current_request.get() or _DIRECT_CALL

    def run_with_request(self, request: Request, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> R:
        """Run the function with ``self.request`` set to ``request`` (the worker's entry point)."""
        token = _current_request.set(request)
        try:
            return self(*args, **kwargs)
        finally:
            _current_request.reset(token)

    def update_state(self, task_id: str | None = None, state: str | None = None, meta: Any = None) -> None:
        """Store a non-final ``state`` for this task, e.g. ``self.update_state(state="PROGRESS", meta={"done": 3})``
        in a ``bind=True`` task (Celery's ``update_state``). ``state`` is any string but a final one (SUCCESS,
        FAILURE, REVOKED, which the worker stores: ``ValueError``); ``meta`` (JSON-serialisable with the default
        serializer) is what ``AsyncResult.info`` and ``on_message`` receive for it. ``task_id`` defaults to the
        running task's (outside a worker, without it: ``ValueError``).

        The state is stored at once (one backend write; on Redis pushed to every waiter). Nothing is stored when the
        app has no result backend, nor for this task's own state when it is ``ignore_result``."""
        if not isinstance(state, str) or not state:
            raise ValueError(f"update_state needs a state, e.g. state='PROGRESS', got {state!r}")
        if state in READY_STATES:
            raise ValueError(f"update_state stores a non-final state, not {state}: the worker stores the final one")
        request = self.request
        own = task_id is None or task_id == request.id
        if task_id is None:
            if request.id is None:
                raise ValueError("update_state outside a worker needs task_id=")
            task_id = request.id
        backend = self.app.backend
        if backend is None or (own and self.options.ignore_result):
            return
        extended = None
        if own and self.app.settings.result_extended:
            extended = {"args": list(request.args), "kwargs": dict(request.kwargs), "queue": request.queue}
        backend.store(ResultRecord(task_id=task_id, state=to_state(state), task=self.name if own else None,
                                   result=meta, retries=request.retries if own else 0, extended=extended))

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """This task called with these arguments, written down but not sent (``add.s(2) | mul.s(3)``,
        ``add_periodic_task``); arguments given when it is sent go in front of these (see taskfleet.signature)."""
        return Signature(task=self.name, args=args, kwargs=kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable ``s()``: it runs with exactly these arguments (a chain's previous result is not passed)."""
        return Signature(task=self.name, args=args, kwargs=kwargs, immutable=True, app=self.app)

    def signature(self, args: tuple[Any, ...] | list[Any] = (), kwargs: Mapping[str, Any] | None = None,
                  **options: Any) -> Signature:
        """``s()`` with send options (``SEND_OPTIONS`` and ``immutable``); unknown ones raise ``TypeError``."""
        return Signature(task=self.name, args=tuple(args), kwargs=kwargs or {}, app=self.app).set(**options)

    def map(self, items: Iterable[Any]) -> Signature:
        """One task that calls this one on each item, in turn (``taskfleet.map``); its result is the list."""
        from taskfleet.canvas.builtins import xmap

        return xmap(self.s(), items)

    def starmap(self, items: Iterable[Iterable[Any]]) -> Signature:
        """One task that calls this one with each item's values as arguments (``taskfleet.starmap``)."""
        from taskfleet.canvas.builtins import xstarmap

        return xstarmap(self.s(), items)

    def chunks(self, items: Iterable[Iterable[Any]], n: int) -> Chunks:
        """``items`` (argument tuples) in chunks of ``n``, one ``taskfleet.starmap`` task each: a group whose
        result is the list of the chunks' result lists."""
        from taskfleet.canvas.primitives import Chunks

        return Chunks(self.s(), items, n)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task to a worker with these arguments; shorthand for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    async def delay_async(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay`` for asyncio callers: the same message, sent without blocking the event loop (the publish runs
        on the app's send threads, ``taskfleet.async_calls``)."""
        return await self.send_async(args, kwargs)

    async def send_async(self, args: tuple[Any, ...] | list[Any] = (), kwargs: Mapping[str, Any] | None = None,
                         **options: Unpack[ApplyOptions]) -> AsyncResult:
        """``apply_async`` for asyncio callers: the same options (unknown ones raise ``TypeError``), sent without
        blocking the event loop. Cancelling the await does not take back a publish already started."""
        from taskfleet.async_calls import run_send  # here: sync callers never load it

        return await run_send(self.app, lambda: self.apply_async(args, kwargs, **options))

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        link: Node | list[Node] | None = None,
        link_error: Node | list[Node] | None = None,
        serializer: str | None = None,
        compression: str | None = None,
        retry: bool = True,
        retry_policy: Mapping[str, Any] | None = None,
    ) -> AsyncResult:
        """Send the task with options: run after ``countdown`` seconds or at ``eta``; skip (REVOKED) if not started
        within ``expires`` seconds / by that datetime; ``priority`` 0-9 (higher first); another ``queue``; a chosen
        ``task_id``; extra ``headers``; ``link``: signatures sent with the result after it succeeded; ``link_error``:
        signatures sent after it finally failed (docs/workflows.md); ``serializer``: one of the app's
        ``accept_content`` (else ``ConfigurationError``); ``compression``: ``gzip``, ``zlib``, ``bz2`` or ``lzma``.

        ``queue``, ``priority``, ``serializer`` and ``compression`` given here win over the app's ``task_routes``,
        which win over the task's own (``@app.task(queue=, priority=)``), which win over the app's defaults
        (docs/routing.md).

        ``retry=False``: one publish attempt, no retry when the broker connection fails; ``retry_policy``: Celery's
        dict (``max_retries``, retries after the first attempt; ``interval_start``, ``interval_step``,
        ``interval_max``, in seconds), read by ``PublishRetry.from_policy``. Without them, the app's
        ``publish_retry``."""
        if link is not None or link_error is not None:
            return self.s().apply_async(
                args, kwargs, countdown=countdown, eta=eta, expires=expires, priority=priority, queue=queue,
                task_id=task_id, headers=headers, link=link, link_error=link_error, serializer=serializer,
                compression=compression, retry=retry, retry_policy=retry_policy)
        return self.app.send(
            self.name, args, kwargs, countdown=countdown, eta=eta,
            expires=self.options.expires if expires is None else expires, priority=priority, queue=queue,
            task_id=task_id, headers=headers, serializer=serializer, compression=compression, retry=retry,
            retry_policy=retry_policy,
        )

    def retry(
        self, *, countdown: float | None = None, exc: BaseException | None = None, max_retries: int | None = None
    ) -> NoReturn:
        """Ask the worker to run this task again after ``countdown`` seconds (default: the task's retry policy).
        When retries are used up the task fails with ``exc`` (or ``MaxRetriesExceeded``)."""
        raise Retry(exc=exc, countdown_s=countdown, max_retries=max_retries)
