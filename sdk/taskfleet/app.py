"""``App``: the configuration, the registry of tasks and periodic entries, the connections to the broker and the
result backend, and the public sending methods (whose messages ``taskfleet.producer`` builds, encodes and publishes)."""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

from taskfleet import backends, brokers
from taskfleet.backends.base import ResultBackend
from taskfleet.brokers.base import Broker
from taskfleet.canvas.builtins import register_builtins
from taskfleet.config import DEFAULT_NAMESPACE, read_config, resolve_source
from taskfleet.discovery import Discovery, PackageSource, django_installed_apps
from taskfleet.errors import ConfigurationError, TaskNotRegistered
from taskfleet.fleet.events import DEFAULT_EVENTS_MAX_LEN
from taskfleet.message import Message
from taskfleet.periodic import DEFAULT_CATCH_UP, CatchUp, PeriodicEntry, entries_from_config
from taskfleet.producer import Call, Producer
from taskfleet.result import AsyncResult
from taskfleet.routing import Routes, TaskRoutes
from taskfleet.schedules import Schedule, crontab, to_schedule, zone
from taskfleet.serializers import JSON, Serializer, get_serializer
from taskfleet.settings import (
    CLASSIC,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_QUEUE,
    DEFAULT_RESULT_EXPIRES_S,
    DEFAULT_SOCKET_TIMEOUT_S,
    DEFAULT_TIMEZONE,
    DEFAULT_VISIBILITY_TIMEOUT_S,
    AppSettings,
    PublishRetry,
    validate_queue_name,
)
from taskfleet.signature import Signature
from taskfleet.task import Task, TaskOptions, TaskOptionsKwargs, check_option_names, check_task_class

if TYPE_CHECKING:
    from taskfleet.async_calls import SendOptions
    from taskfleet.fleet.control import Control

R = TypeVar("R")


class App:
    """A Taskfleet application: ``App("billing", broker="redis://...", result_backend="redis://...")``.

    Task names default to ``"<app name>.<function name>"``. Connections are opened lazily, once per process, so an
    app imported before ``fork()`` is safe to use in the children. Nothing here reads environment variables: an
    entrypoint passes ``**taskfleet.settings_from_env(os.environ)`` when it wants them.
    """

    def __init__(
        self,
        name: str,
        *,
        broker: str | None = None,
        broker_management_url: str | None = None,
        result_backend: str | None = None,
        default_queue: str = DEFAULT_QUEUE,
        serializer: str = JSON,
        accept_content: frozenset[str] | set[str] | None = None,
        allow_pickle: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        compression: str | None = None,
        max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
        visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        result_expires_s: float = DEFAULT_RESULT_EXPIRES_S,
        publish_retry: PublishRetry | None = None,
        socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
        timezone: str = DEFAULT_TIMEZONE,
        result_extended: bool = False,
        beat_schedule: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] = (),
        task_cls: type[Task[Any]] = Task,
        include: Iterable[str] = (),
        task_routes: TaskRoutes | None = None,
        worker_send_task_events: bool = False,
        task_send_sent_event: bool = False,
        events_max_len: int = DEFAULT_EVENTS_MAX_LEN,
        task_default_queue_type: str = CLASSIC,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigurationError("App needs a non-empty name, e.g. App('billing')")
        self.name = name
        #: The class of this app's tasks unless ``@app.task(base=)`` names another (Celery's ``task_cls``): a
        #: ``Task`` subclass, e.g. one with hooks or a ``__call__`` that runs each task in a framework context.
        self.task_cls = check_task_class(task_cls, "App(task_cls=)")
        self._settings = AppSettings(
            broker_url=broker, broker_management_url=broker_management_url, result_backend_url=result_backend,
            default_queue=default_queue,
            serializer=serializer,
            accept_content=frozenset(accept_content) if accept_content is not None else frozenset({serializer}),
            allow_pickle=allow_pickle, max_message_bytes=max_message_bytes, compression=compression,
            max_decompressed_bytes=max_decompressed_bytes,
            visibility_timeout_s=visibility_timeout_s, max_deliveries=max_deliveries,
            result_expires_s=result_expires_s, publish_retry=publish_retry or PublishRetry(),
            socket_timeout_s=socket_timeout_s, timezone=timezone, result_extended=result_extended,
            worker_send_task_events=worker_send_task_events, task_send_sent_event=task_send_sent_event,
            events_max_len=events_max_len, task_default_queue_type=task_default_queue_type,
        )
        #: Task modules imported when a worker, beat or ``taskfleet check`` starts (``import_tasks``).
        self.discovery = Discovery(include=[include] if isinstance(include, str) else list(include))
        self._config_sources: list[tuple[object, str | None]] = []
        #: The configuration read so far: (source as given, the object it named, namespace), for ``taskfleet check``.
        self.config_read: list[tuple[object, object, str | None]] = []
        #: Celery's ``task_routes`` (taskfleet.routing, docs/routing.md): where each task call goes, by task name
        #: (exact, glob or regex) or by router function; the call's own options win over it, it wins over the task
        #: decorator's.
        self.routes = Routes(task_routes)
        self.tasks: dict[str, Task[Any]] = {}
        #: The beat schedule: entry name -> entry (``add_periodic_task``, ``@app.periodic``, ``beat_schedule=``).
        self.periodic_tasks: dict[str, PeriodicEntry] = {}
        for entry in entries_from_config(beat_schedule):
            self._add_entry(entry)
        self._lock = threading.Lock()
        self._broker: tuple[int, Broker] | None = None
        self._backend: tuple[int, ResultBackend | None] | None = None
        self._producer = Producer(self)
        register_builtins(self)

    def __repr__(self) -> str:
        return f"<App {self.name} {self.settings!r}>"

    # -- configuration -------------------------------------------------------------------------------------------

    @property
    def settings(self) -> AppSettings:
        """The app's settings, once any configuration named by a string (``config_from_object("proj.settings")``)
        has been read: that happens here, on first use, as in Celery."""
        if self._config_sources:
            sources, self._config_sources = self._config_sources, []
            for source, namespace in sources:
                self._apply_config(source, namespace)
        return self._settings

    @settings.setter
    def settings(self, value: AppSettings) -> None:
        self._settings = value

    def config_from_object(self, obj: object, *, namespace: str | None = DEFAULT_NAMESPACE) -> None:
        """Read settings from a mapping, a class, a module, or a string naming one (``"proj.settings"``,
        ``"django.conf:settings"``), under keys ``<namespace>_<NAME>``: ``TASKFLEET_BROKER_URL``,
        ``TASKFLEET_RESULT_BACKEND`` and ``TASKFLEET_<KEYWORD>`` for the other ``App`` keywords (the names of our
        environment variables; ``taskfleet.config``). A string is read on the app's first use of its settings, so
        a module imported while Django loads its settings can name them. A key under the namespace that is not a
        setting raises ``ConfigurationError`` naming it (and, for Celery's names, what ours is)."""
        if isinstance(obj, str):
            self._config_sources.append((obj, namespace))
        else:
            self._apply_config(obj, namespace)

    def _apply_config(self, source: object, namespace: str | None) -> None:
        resolved = resolve_source(source)
        found = read_config(resolved, namespace=namespace, keywords=CONFIG_KEYWORDS)
        self.config_read.append((source, resolved, namespace))
        if found:
            self.configure(**found)

    def autodiscover_tasks(self, packages: PackageSource | None = None, *, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Import ``<package>.<related_name>`` of each package when a worker, beat or ``taskfleet check`` starts
        (``import_tasks``), or now with ``force=True``. ``packages``: names, or a function returning them (called
        then); None: Django's ``INSTALLED_APPS`` (``taskfleet.contrib.django``). A package without the module is
        skipped; an error inside one that exists is raised."""
        self.discovery.add_search(django_installed_apps if packages is None else packages, related_name)
        if force:
            self.import_tasks()

    def import_tasks(self) -> list[str]:
        """Import the ``include`` modules and the autodiscovered task modules (each once per process); returns the
        module names imported. Raises ``ConfigurationError`` naming a module that fails to import."""
        return self.discovery.import_all()

    def configure(self, **changes: Any) -> None:
        """Change settings before use: any ``App`` keyword but ``name`` (``broker=``, ``result_backend=``,
        ``include=`` (added to), ``beat_schedule=`` (entries added), ``task_cls=``, ``task_routes=`` (replaced), or
        an ``AppSettings`` field); open connections are closed. Unknown names raise ``TypeError``."""
        if "include" in changes:
            include = changes.pop("include")
            self.discovery.include.extend(m for m in ([include] if isinstance(include, str) else include)
                                          if m not in self.discovery.include)
        if "beat_schedule" in changes:
            self.load_beat_schedule(changes.pop("beat_schedule"))
        if "task_cls" in changes:
            self.task_cls = check_task_class(changes.pop("task_cls"), "task_cls")
        if "task_routes" in changes:
            self.routes = Routes(changes.pop("task_routes"))
        if not changes:
            return
        renamed = {"broker": "broker_url", "result_backend": "result_backend_url"}
        fields = {renamed.get(k, k): v for k, v in changes.items()}
        if "accept_content" in fields:
            fields["accept_content"] = frozenset(fields["accept_content"])
        self._settings = self.settings.replace(**fields)
        self.close()

    @property
    def timezone(self) -> str:
        """IANA name of the zone crontab schedules are read in (default ``"UTC"``)."""
        return self.settings.timezone

    @property
    def tzinfo(self) -> tzinfo:
        """``timezone`` as a ``tzinfo``."""
        return zone(self.settings.timezone)

    @property
    def serializer(self) -> Serializer:
        return get_serializer(self.settings.serializer)

    # -- connections (one per process) ---------------------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """This process's broker client (created on first use; a forked child gets its own)."""
        pid = os.getpid()
        current = self._broker
        if current is None or current[0] != pid:
            settings = self.settings  # outside the lock: a first read applies pending configuration (close())
            with self._lock:
                current = self._broker
                if current is None or current[0] != pid:
                    current = (pid, brokers.connect(settings.broker_settings()))
                    self._broker = current
        return current[1]

    @property
    def backend(self) -> ResultBackend | None:
        """This process's result-backend client, or None when the app has no result backend."""
        pid = os.getpid()
        current = self._backend
        if current is None or current[0] != pid:
            settings = self.settings  # outside the lock, as in ``broker``
            with self._lock:
                current = self._backend
                if current is None or current[0] != pid:
                    bs = settings.backend_settings()
                    current = (pid, None if bs is None else backends.connect(bs))
                    self._backend = current
        return current[1]

    @property
    def control(self) -> Control:
        """Celery's ``app.control``: inspect and steer this app's workers (``taskfleet.fleet.control``)."""
        from taskfleet.fleet.control import Control  # here: only the clients that steer the fleet load it

        return Control(self)

    def close(self) -> None:
        """Close this process's connections (they reopen on next use)."""
        self._producer.close()  # its event store may be on the broker's connection: first
        with self._lock:
            broker, backend = self._broker, self._backend
            self._broker = self._backend = None
        if broker is not None and broker[0] == os.getpid():
            broker[1].close()
        if backend is not None and backend[0] == os.getpid() and backend[1] is not None:
            backend[1].close()

    # -- tasks ---------------------------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[..., R], /) -> Task[R]: ...

    @overload
    def task(
        self, /, *, name: str | None = None, base: type[Task[Any]] | None = None,
        **options: Unpack[TaskOptionsKwargs],
    ) -> Callable[[Callable[..., R]], Task[R]]: ...

    def task(
        self, fn: Callable[..., R] | None = None, /, *, name: str | None = None, base: type[Task[Any]] | None = None,
        **options: Unpack[TaskOptionsKwargs],
    ) -> Task[R] | Callable[[Callable[..., R]], Task[R]]:
        """Register a task: ``@app.task`` or ``@app.task(queue=..., max_retries=..., ...)``: ``name`` (default
        ``"<app name>.<function name>"``), ``base`` (the ``Task`` subclass the task is an instance of, for its
        hooks; default the app's ``task_cls``) and the other fields of ``TaskOptions``, which gives the meaning,
        units and default of each; an unknown option raises ``TypeError``, a ``base`` that is not a ``Task``
        subclass ``ConfigurationError``."""
        check_option_names(options)
        queue = options.get("queue")
        if queue is not None:
            validate_queue_name(queue)
        cls = self.task_cls if base is None else check_task_class(base, "@app.task(base=)")

        def register(func: Callable[..., R]) -> Task[R]:
            task_options = TaskOptions(name=name or f"{self.name}.{func.__name__}", **options)
            existing = self.tasks.get(task_options.name)
            if existing is not None and existing.fn is not func:
                raise ConfigurationError(f"task name {task_options.name!r} is registered twice")
            task: Task[R] = cls(self, func, task_options)
            self.tasks[task_options.name] = task
            return task

        return register(fn) if fn is not None else register

    def signature(self, name: str, args: tuple[Any, ...] | list[Any] = (), kwargs: Mapping[str, Any] | None = None,
                  **options: Any) -> Signature:
        """A call of task ``name`` that need not be registered here (``app.signature("billing.charge",
        args=(42,))``), bound to this app: ``.delay()`` sends it by name. ``options`` are ``SEND_OPTIONS``
        (``taskfleet.signature``) and ``immutable``; unknown ones raise ``TypeError``."""
        return Signature(task=name, args=tuple(args), kwargs=kwargs or {}, app=self).set(**options)

    def get_task(self, name: str) -> Task[Any]:
        """The registered task ``name``; ``TaskNotRegistered`` if there is none."""
        try:
            return self.tasks[name]
        except KeyError:
            raise TaskNotRegistered(f"task {name!r} is not registered in app {self.name!r}") from None

    # -- periodic tasks (sent by ``taskfleet beat``) -------------------------------------------------------------

    def add_periodic_task(
        self, schedule: Schedule | float | timedelta | str, signature: Signature, *, name: str,
        catch_up: CatchUp = DEFAULT_CATCH_UP, queue: str | None = None, priority: int | None = None,
        expires: float | None = None,
    ) -> PeriodicEntry:
        """Send ``signature`` on ``schedule`` (a ``crontab``, seconds, a ``timedelta`` or a cron string) under the
        unique ``name``. ``catch_up`` says what beat does with missed ticks (``"last"``, ``"all"``, ``"none"``;
        see ``taskfleet.periodic``); ``queue``/``priority``/``expires`` (seconds) override the signature's."""
        entry = PeriodicEntry(name=name, signature=signature.set(queue=queue, priority=priority, expires=expires),
                              schedule=to_schedule(schedule), catch_up=catch_up)
        self._add_entry(entry)
        return entry

    def periodic(
        self, *, cron: str | crontab | None = None, every: float | timedelta | None = None, name: str | None = None,
        queue: str | None = None, priority: int = 0, catch_up: CatchUp = DEFAULT_CATCH_UP,
    ) -> Callable[[Callable[..., R]], Task[R]]:
        """Register a task that beat sends on a schedule: ``@app.periodic(cron="*/5 * * * *")`` or
        ``@app.periodic(every=30)`` (seconds). ``name`` names both the task (default ``<app>.<function>``) and its
        schedule entry; the task takes no arguments."""
        if (cron is None) == (every is None):
            raise ConfigurationError("@app.periodic needs exactly one of cron= or every=")
        schedule = to_schedule(cron if cron is not None else every)  # type: ignore[arg-type]

        def register(func: Callable[..., R]) -> Task[R]:
            task: Task[R] = self.task(name=name, queue=queue, priority=priority)(func)
            self._add_entry(PeriodicEntry(name=task.name, signature=task.s(), schedule=schedule, catch_up=catch_up))
            return task

        return register

    def load_beat_schedule(self, config: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]
                           ) -> list[PeriodicEntry]:
        """Add the entries of a declarative schedule (see ``taskfleet.periodic.entries_from_config``)."""
        entries = entries_from_config(config)
        for entry in entries:
            self._add_entry(entry)
        return entries

    def _add_entry(self, entry: PeriodicEntry) -> None:
        existing = self.periodic_tasks.get(entry.name)
        if existing is not None and existing != entry:
            raise ConfigurationError(f"periodic task name {entry.name!r} is used twice")
        self.periodic_tasks[entry.name] = entry

    # -- sending -------------------------------------------------------------------------------------------------

    def send(
        self,
        name: str,
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
        serializer: str | None = None,
        compression: str | None = None,
        retry: bool = True,
        retry_policy: Mapping[str, Any] | None = None,
    ) -> AsyncResult:
        """Send task ``name`` without importing its code (``app.send("billing.charge", args=(42,))``).
        Options as for ``Task.apply_async``; ``task_routes`` apply by name. Returns once the broker has stored the
        message."""
        message = self._producer.message(name, args, kwargs, countdown=countdown, eta=eta, expires=expires,
                                         priority=priority, queue=queue, task_id=task_id, headers=headers,
                                         now=time.time(), serializer=serializer, compression=compression)
        self._producer.publish(message, retry=PublishRetry.for_call(retry, retry_policy))
        return AsyncResult(message.id, app=self)

    async def send_async(self, name: str, args: tuple[Any, ...] | list[Any] = (),
                         kwargs: Mapping[str, Any] | None = None, **options: Unpack[SendOptions]) -> AsyncResult:
        """``send`` for asyncio callers: the same options (unknown ones raise ``TypeError``), sent without blocking
        the event loop (the publish runs on the app's send threads, ``taskfleet.async_calls``)."""
        from taskfleet.async_calls import run_send  # here: sync callers never load it

        return await run_send(self, lambda: self.send(name, args, kwargs, **options))

    def send_many(
        self,
        calls: Iterable[Call],
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        retry: bool = True,
        retry_policy: Mapping[str, Any] | None = None,
    ) -> list[AsyncResult]:
        """Send many task calls at once: ``app.send_many(charge.s(i) for i in ids)``. Returns their results, in
        the order of ``calls``, once the broker has stored every message (on RabbitMQ: confirmed).

        A call is a ``Signature`` (``task.s(...)``) or a ``(task name, args, kwargs)`` tuple, sent by name as with
        ``send``. Each is sent with its own queue, priority and expiry (``Signature``), else its task's when the task
        is registered here, else the app's defaults, and with its own ``task_id``, ``countdown``/``eta`` and
        ``headers`` when it has them; ``queue``, ``priority`` (0-9) and ``countdown`` (seconds) given here apply to
        every call instead. A signature with ``link``/``link_error`` is a ``TypeError``: send a ``group``.

        The calls go to the broker in chunks of ``SEND_MANY_CHUNK`` (``taskfleet.producer``) through
        ``Broker.enqueue_many``, pipelined (Redis: a few scripts per chunk; RabbitMQ: a chunk is published whole and
        its confirms awaited once); each message is encoded once, as ``send`` encodes it, the next chunk while the
        broker stores this one. A chunk that cannot be sent (``EncodeError``, ``MessageTooLarge``, a broker error)
        raises after the chunks before it were stored, and the exception's note says how many calls were sent.
        ``retry``/``retry_policy``: the publish retry policy of every chunk, as for ``Task.apply_async``."""
        return self._producer.send_many(calls, queue=queue, priority=priority, countdown=countdown,
                                        retry=PublishRetry.for_call(retry, retry_policy))

    def publish(self, message: Message) -> None:
        """Encode ``message`` and hand it to the broker (after its eta, if any). Raises ``MessageTooLarge`` above
        ``max_message_bytes``, ``EncodeError`` for unserializable arguments, ``BrokerConnectionError``."""
        self._producer.publish(message)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        """A handle on the task ``task_id``."""
        return AsyncResult(task_id, app=self)


#: The ``App`` keywords configuration can set (``config_from_object``, ``configure``): all but ``name``.
CONFIG_KEYWORDS = frozenset(inspect.signature(App.__init__).parameters) - {"self", "name"}
