"""Routing: where a task call goes (its queue) and how it is sent (priority, serializer, compression).

``App(task_routes=...)`` takes Celery's forms:

- a mapping of task names to routes: an exact name, a glob (``"billing.*"``: ``*`` matches any characters, dots
  included, and the glob must match the whole name) or a compiled regular expression (``re.compile(r"(image|video)
  \\.")``, matched from the start of the name, as Celery's ``re.match``). Exact names are looked up first, then the
  patterns in the mapping's order;
- a router function ``router(name, args, kwargs, options, *, task) -> route or None``: ``options`` are the routing
  options the call itself gave (``queue``, ``priority``, ``serializer``, ``compression``), ``task`` the registered
  ``Task`` or None (a task sent by name). It may take ``**kwargs`` and ignore what it does not need;
- a list (or tuple) of those, asked in order: the first that answers (not None) decides.

A route is a queue name (``"emails"``), a mapping of ``ROUTE_KEYS`` (``{"queue": "slow", "priority": 2}``) or a
``Route``. Precedence, highest first, field by field (``resolve``): what the call gives (``apply_async``/signature
options) > the route > the task decorator (``@app.task(queue=, priority=)``) > the app (``default_queue``, priority
0, ``serializer``, ``compression``). See docs/routing.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeAlias

from taskfleet.compression import check_compression
from taskfleet.errors import ConfigurationError
from taskfleet.message import MAX_PRIORITY, MIN_PRIORITY
from taskfleet.serializers import get_serializer
from taskfleet.settings import validate_queue_name

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.task import Task

__all__ = ["ROUTE_KEYS", "Route", "Router", "Routes", "Routing", "TaskRoutes", "decide", "lookup", "resolve"]

#: What a route may set.
ROUTE_KEYS = ("queue", "priority", "serializer", "compression")
#: Keys of Celery's AMQP routes that have no meaning here (a queue is addressed by its name): named in the error.
_AMQP_KEYS = frozenset({"exchange", "exchange_type", "routing_key"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Routing options; None leaves a field to the next in precedence. ``queue`` 1-200 of ``A-Za-z0-9._:-``,
    ``priority`` 0-9, ``serializer`` a serializer's name, ``compression`` a codec (``taskfleet.compression``)."""

    queue: str | None = None
    priority: int | None = None
    serializer: str | None = None
    compression: str | None = None

    def __post_init__(self) -> None:
        if self.queue is not None:
            validate_queue_name(self.queue)
        if self.priority is not None and (isinstance(self.priority, bool) or not isinstance(self.priority, int)
                                          or not MIN_PRIORITY <= self.priority <= MAX_PRIORITY):
            raise ConfigurationError(f"priority must be {MIN_PRIORITY}-{MAX_PRIORITY}, got {self.priority!r}")
        if self.serializer is not None:
            get_serializer(self.serializer)
        object.__setattr__(self, "compression", check_compression(self.compression))

    @classmethod
    def of(cls, value: object, where: str) -> Route | None:
        """The route ``value`` stands for: None, a queue name, a mapping of ``ROUTE_KEYS`` or a ``Route``; anything
        else (or an unknown key) is a ``ConfigurationError`` naming ``where``."""
        if value is None or isinstance(value, Route):
            return value
        if isinstance(value, str):
            return cls(queue=value)
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(ROUTE_KEYS))
            if unknown:
                amqp = " (there are no exchanges or routing keys: a queue is named directly)" \
                    if _AMQP_KEYS & set(unknown) else ""
                raise ConfigurationError(f"{where}: unknown route key(s) {unknown}{amqp}; a route takes "
                                         f"{', '.join(ROUTE_KEYS)}")
            try:
                return cls(**value)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: {exc}") from exc
        raise ConfigurationError(f"{where}: a route is a queue name, a mapping of {', '.join(ROUTE_KEYS)} or None, "
                                 f"got {value!r}")

    def given(self) -> dict[str, Any]:
        """The fields that are set, as a dict (what a router function receives as ``options``)."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}


_NOTHING = Route()
#: A router function (module docstring); it returns a route (``Route.of``) or None.
Router = Callable[..., Any]
#: A mapping of ``task_routes``: task name, glob or compiled regex -> route.
RouteTable: TypeAlias = "Mapping[str | re.Pattern[str], Any]"
#: What ``App(task_routes=)`` takes (module docstring).
TaskRoutes: TypeAlias = "RouteTable | Router | Sequence[RouteTable | Router]"


class _MapRouter:
    """One mapping of ``task_routes``: exact names first, then globs and regexes in order."""

    __slots__ = ("exact", "patterns")

    def __init__(self, table: Mapping[str | re.Pattern[str], Any]) -> None:
        self.exact: dict[str, Route | None] = {}
        self.patterns: list[tuple[re.Pattern[str], Route | None]] = []
        for key, value in table.items():
            route = Route.of(value, f"task_routes[{key!r}]")
            if isinstance(key, re.Pattern):
                self.patterns.append((key, route))
            elif not isinstance(key, str) or not key:
                raise ConfigurationError(f"task_routes keys are task names, globs or compiled regexes, got {key!r}")
            elif "*" in key:
                self.patterns.append((_glob(key), route))
            else:
                self.exact[key] = route

    def __call__(self, name: str) -> Route | None:
        if name in self.exact:
            return self.exact[name]
        for pattern, route in self.patterns:
            if pattern.match(name):
                return route
        return None


class Routes:
    """An app's ``task_routes``, checked once: mappings are read (every route checked) when the app is made."""

    __slots__ = ("_routers",)

    def __init__(self, spec: TaskRoutes | None = None) -> None:
        items: Sequence[Any] = () if spec is None else (
            spec if isinstance(spec, list | tuple) else (spec,))
        self._routers: tuple[_MapRouter | Router, ...] = tuple(_router(item) for item in items)

    def __bool__(self) -> bool:
        return bool(self._routers)

    def named_tasks(self) -> list[str]:
        """The task names the mappings route by exact name (not globs, regexes or router functions)."""
        return [name for router in self._routers if isinstance(router, _MapRouter) for name in router.exact]

    def lookup(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Mapping[str, Any],
               task: Task[Any] | None) -> Route | None:
        """The route of the first router that answers for task ``name``, or None when none does. A router
        function's answer is checked like a mapping's (``ConfigurationError``)."""
        for router in self._routers:
            if isinstance(router, _MapRouter):
                route = router(name)
            else:
                route = Route.of(router(name, args, kwargs, dict(options), task=task),
                                 f"task_routes router {getattr(router, '__qualname__', router)!r} for {name!r}")
            if route is not None:
                return route
        return None


@dataclass(frozen=True, slots=True)
class Routing:
    """How one call is sent, every option decided (``resolve``): ``compression`` None means not compressed."""

    queue: str
    priority: int
    serializer: str
    compression: str | None


def resolve(app: App, name: str, args: Sequence[Any], kwargs: Mapping[str, Any] | None,
            call: Route = _NOTHING) -> Routing:
    """Every routing option of one call of task ``name`` through ``app``, each from the highest of: ``call`` (what
    the call gave), the route of ``app``'s ``task_routes``, the task's decorator (queue, priority; when ``app`` has
    the task registered), the app's defaults. A serializer outside the app's ``accept_content`` is a
    ``ConfigurationError``."""
    return decide(app, name, call, lookup(app, name, args, kwargs, call))


def lookup(app: App, name: str, args: Sequence[Any], kwargs: Mapping[str, Any] | None,
           call: Route = _NOTHING) -> Route | None:
    """The route ``app``'s ``task_routes`` give one call of task ``name`` (``call``: what the call gave), or None."""
    routes: Routes = app.routes
    return routes.lookup(name, args, kwargs or {}, call.given(), app.tasks.get(name)) if routes else None


def decide(app: App, name: str, call: Route, found: Route | None) -> Routing:
    """``resolve`` with the route already looked up (``found``, or None when no route answered)."""
    found = found or _NOTHING
    task = app.tasks.get(name)
    settings = app.settings
    options = task.options if task is not None else None
    priority = call.priority if call.priority is not None else found.priority
    if priority is None:
        priority = options.priority if options is not None else 0
    serializer = call.serializer or found.serializer or settings.serializer
    if serializer not in settings.accept_content:
        raise ConfigurationError(f"serializer {serializer!r} (for {name}) is not in the app's accept_content "
                                 f"{sorted(settings.accept_content)}: its workers would refuse it")
    return Routing(queue=call.queue or found.queue or (options.queue if options is not None else None)
                   or settings.default_queue,
                   priority=priority, serializer=serializer,
                   compression=call.compression or found.compression or settings.compression)


def _router(item: Any) -> _MapRouter | Router:
    if isinstance(item, Mapping):
        return _MapRouter(item)
    if isinstance(item, str):
        raise ConfigurationError(f"task_routes: pass the router function itself, not its dotted path {item!r}")
    if callable(item):
        router: Router = item
        return router
    raise ConfigurationError(f"task_routes takes mappings and router functions (or a list of them), got {item!r}")


def _glob(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over the whole name: ``*`` is any run of characters (dots included), all else literal."""
    return re.compile("".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern)) + r"\Z")
