"""``Signature``: a task call written down but not sent (task name, arguments, send options, callbacks).

``report.s(2024, region="eu")`` makes one; beat sends one per tick; ``add.s(2) | mul.s(3)`` chains two
(``taskfleet.canvas``). It is plain data (``to_dict`` / ``from_dict`` round-trip through JSON, so it can travel
inside a message). ``sig.set(queue="low")`` and ``sig.clone(1)`` return a changed copy; ``sig.link(cb)`` and
``sig.link_error(eb)`` change the signature in place, as in Celery, where dropping their return value is the
idiom (``sig.link(cb); sig.delay()``). A signature made by ``task.s()`` or ``app.signature()`` knows its app, so
``sig.delay()`` needs none; the app is not part of its data (not in ``to_dict``, ``==`` or ``repr``).

Partial application is Celery's: arguments given when the signature is sent (or, in a chain, the previous task's
result) go IN FRONT of its own (``add.s(2).delay(4)`` runs ``add(4, 2)``), keyword arguments are merged (the new
ones win), and an immutable signature (``task.si()``) ignores them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from taskfleet.compression import check_compression
from taskfleet.errors import ConfigurationError
from taskfleet.message import MAX_PRIORITY, MIN_PRIORITY
from taskfleet.routing import Route, Routing, resolve
from taskfleet.serializers import get_serializer
from taskfleet.settings import validate_queue_name

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.canvas.primitives import Node
    from taskfleet.result import AsyncResult

#: The send options a signature carries (``sig.set(...)``, ``sig.apply_async(**options)``), as in
#: ``Task.apply_async``: ``queue``, ``priority`` (0-9), ``expires`` (seconds after sending, or a datetime),
#: ``countdown`` (seconds), ``eta`` (a datetime), ``task_id``, ``headers``, ``serializer`` (one of the app's
#: ``accept_content``) and ``compression`` (a codec of ``taskfleet.compression``).
SEND_OPTIONS = ("queue", "priority", "expires", "countdown", "eta", "task_id", "headers", "serializer", "compression")
_FIELDS = frozenset({"task", "args", "kwargs", "immutable", "link", "link_error", *SEND_OPTIONS})


@dataclass(frozen=True, kw_only=True, slots=True)
class Signature:
    """One task call: ``task`` (its registered name), ``args``, ``kwargs``, the send options (``SEND_OPTIONS``;
    None falls back to the task's own, or the app's default queue), ``immutable`` (ignore the parent's result and
    any partial arguments), ``callbacks`` (sent with the result after the task succeeded: ``link``) and
    ``errbacks`` (sent after it finally failed: ``link_error``)."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    expires: float | datetime | None = None
    countdown: float | None = None
    eta: datetime | None = None
    task_id: str | None = None
    headers: Mapping[str, Any] | None = None
    serializer: str | None = None
    compression: str | None = None
    immutable: bool = False
    callbacks: tuple[Node, ...] = ()
    errbacks: tuple[Node, ...] = ()
    app: App | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ConfigurationError("a signature needs a task name")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        if self.headers is not None:
            object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "callbacks", _nodes(self.callbacks, "link"))
        object.__setattr__(self, "errbacks", _nodes(self.errbacks, "link_error"))
        if self.queue is not None:
            validate_queue_name(self.queue)
        if self.priority is not None and not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise ConfigurationError(f"priority must be {MIN_PRIORITY}-{MAX_PRIORITY}, got {self.priority}")
        if isinstance(self.expires, datetime):
            object.__setattr__(self, "expires", _aware(self.expires))
        elif self.expires is not None and self.expires <= 0:
            raise ConfigurationError("expires must be > 0 seconds")
        if self.countdown is not None and self.countdown < 0:
            raise ConfigurationError("countdown must be >= 0 seconds")
        if self.eta is not None:
            if self.countdown is not None:
                raise ConfigurationError("pass countdown or eta, not both")
            object.__setattr__(self, "eta", _aware(self.eta))
        if self.task_id is not None and (not isinstance(self.task_id, str) or not self.task_id):
            raise ConfigurationError("task_id must be a non-empty string")
        if self.serializer is not None:
            get_serializer(self.serializer)
        object.__setattr__(self, "compression", check_compression(self.compression))

    # -- changing (each returns a new signature) -----------------------------------------------------------------

    def set(self, **options: Any) -> Signature:
        """A copy with these send options (``SEND_OPTIONS``) or ``immutable`` changed; None keeps the current
        value. An unknown option raises ``TypeError``."""
        check_options(options, (*SEND_OPTIONS, "immutable"), "Signature.set")
        changes = {name: value for name, value in options.items() if value is not None}
        if "eta" in changes:
            changes.setdefault("countdown", None)
        elif "countdown" in changes:
            changes["eta"] = None
        return dataclasses.replace(self, **changes)

    def clone(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> Signature:
        """A copy with ``args`` put in front of its own, ``kwargs`` merged into its own (unless immutable) and
        ``options`` set (see ``set``)."""
        merged_args, merged_kwargs = self.merged(tuple(args), kwargs)
        return dataclasses.replace(self, args=merged_args, kwargs=merged_kwargs).set(**options)

    def merged(self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None) -> tuple[tuple[Any, ...],
                                                                                        Mapping[str, Any]]:
        """The arguments this call runs with when ``args``/``kwargs`` are applied to it: in front of its own and
        merged into its own, or its own unchanged when it is immutable."""
        if self.immutable or (not args and not kwargs):
            return self.args, self.kwargs
        return (*args, *self.args), {**self.kwargs, **(kwargs or {})}

    def link(self, callback: Node) -> Signature:
        """Send ``callback`` after this task succeeded, with its result as the first argument (unless the callback
        is immutable). As in Celery this signature is changed in place (``sig.link(cb); sig.delay()`` sends the
        callback: the one method here that changes a signature); it returns the signature (Celery returns the
        callback), so links chain: ``add.s(1, 1).link(a).link_error(b)``."""
        object.__setattr__(self, "callbacks", (*self.callbacks, callback))
        return self

    def link_error(self, errback: Node) -> Signature:
        """Send ``errback`` after this task finally failed (its retries used up, or expired), with ``(request, exc,
        traceback)`` in front of its own arguments unless it is immutable (see docs/workflows.md). Changes this
        signature in place and returns it, as ``link``."""
        object.__setattr__(self, "errbacks", (*self.errbacks, errback))
        return self

    def on_error(self, errback: Node) -> Signature:
        """``link_error`` (Celery's ``on_error``): ``add.s(1).on_error(eb).delay()``."""
        return self.link_error(errback)

    def __or__(self, other: Node) -> Node:
        """``a | b``: a chain (a group after it makes a chord; see ``taskfleet.canvas``)."""
        from taskfleet.canvas.composition import compose

        return compose(self, other)

    # -- sending --------------------------------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send this call with ``args`` in front of its own and ``kwargs`` merged in (``apply_async(args,
        kwargs)``)."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> AsyncResult:
        """Send this call through its app, ``args`` in front of its own and ``kwargs`` merged in (unless immutable).
        ``options`` are ``SEND_OPTIONS`` plus ``link`` and ``link_error`` (a signature or a list of them); they
        override the signature's own. Unknown options raise ``TypeError``."""
        from taskfleet.canvas.launch import launch
        from taskfleet.result import AsyncResult

        result = launch(self, tuple(args), kwargs, options)
        assert isinstance(result, AsyncResult)  # a task call's result (a GroupResult is a group's)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now (as calling the task does), with ``args``/``kwargs`` applied as for ``delay``."""
        call_args, call_kwargs = self.merged(args, kwargs)
        return self.bound_app().get_task(self.task)(*call_args, **call_kwargs)

    def bound_app(self) -> App:
        """The app this signature sends through; ``ConfigurationError`` when it has none."""
        if self.app is None:
            raise ConfigurationError(f"signature {self!r} has no app: make it with task.s(...) or "
                                     "app.signature(name, ...), or send it with app.send_many")
        return self.app

    def with_app(self, app: App | None) -> Signature:
        """This signature bound to ``app`` (and so are its callbacks and errbacks)."""
        from taskfleet.canvas.codec import bind

        bound = bind(self, app)
        assert isinstance(bound, Signature)
        return bound

    def route(self) -> Route:
        """The routing options this call gives itself (each None when it leaves it to the routes, its task or the
        app)."""
        return Route(queue=self.queue, priority=self.priority, serializer=self.serializer,
                     compression=self.compression)

    def routing(self, app: App, args: tuple[Any, ...] | None = None,
                kwargs: Mapping[str, Any] | None = None) -> Routing:
        """How this call is sent through ``app`` (``taskfleet.routing.resolve``): its own options, else ``app``'s
        ``task_routes``, else its task's (when ``app`` has it registered), else the app's defaults. A router function
        sees ``args``/``kwargs`` (default: the signature's own)."""
        return resolve(app, self.task, self.args if args is None else args,
                       self.kwargs if kwargs is None else kwargs, self.route())

    def expiry(self, app: App) -> float | datetime | None:
        """The ``expires`` this call is sent with through ``app``: its own, else its task's when ``app`` has it
        registered."""
        if self.expires is not None:
            return self.expires
        task = app.tasks.get(self.task)
        return task.options.expires if task is not None else None

    @property
    def options(self) -> dict[str, Any]:
        """The send options that are set (``SEND_OPTIONS`` not None)."""
        return {name: value for name in SEND_OPTIONS if (value := getattr(self, name)) is not None}

    # -- plain data -----------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``task``, ``args``, ``kwargs``, and, when set, each send option (datetimes as ISO-8601
        strings), ``immutable``, ``link`` and ``link_error`` (lists of signature dicts)."""
        out: dict[str, Any] = {"task": self.task, "args": list(self.args), "kwargs": dict(self.kwargs)}
        for name, value in self.options.items():
            out[name] = value.isoformat() if isinstance(value, datetime) else (
                dict(value) if name == "headers" else value)
        if self.immutable:
            out["immutable"] = True
        if self.callbacks:
            out["link"] = [node.to_dict() for node in self.callbacks]
        if self.errbacks:
            out["link_error"] = [node.to_dict() for node in self.errbacks]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, app: App | None = None) -> Signature:
        """The signature ``to_dict`` wrote, bound to ``app``. Unknown fields or bad values raise
        ``ConfigurationError``."""
        from taskfleet.canvas.codec import node_from_dict

        unknown = set(raw) - _FIELDS
        if unknown:
            raise ConfigurationError(f"unknown signature fields: {sorted(unknown)}")
        try:
            return cls(
                task=raw["task"], args=tuple(raw.get("args") or ()), kwargs=dict(raw.get("kwargs") or {}),
                queue=raw.get("queue"), priority=raw.get("priority"), expires=read_when(raw.get("expires")),
                countdown=raw.get("countdown"), eta=read_when(raw.get("eta")), task_id=raw.get("task_id"),
                headers=raw.get("headers"), serializer=raw.get("serializer"), compression=raw.get("compression"),
                immutable=bool(raw.get("immutable", False)),
                callbacks=tuple(node_from_dict(n, app=app) for n in raw.get("link") or ()),
                errbacks=tuple(node_from_dict(n, app=app) for n in raw.get("link_error") or ()), app=app,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"malformed signature {dict(raw)!r}: {exc!r}") from exc

    def __repr__(self) -> str:
        if self.task in _REPRS:
            return _REPRS[self.task](self)
        parts = [*(repr(a) for a in self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"{self.task}({', '.join(parts)})"


def check_send_options(options: Mapping[str, Any]) -> None:
    """``ConfigurationError`` when a value of these ``SEND_OPTIONS`` is out of range (as a signature checks its
    own)."""
    Signature(task="options", **options)


def check_options(options: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """``TypeError`` naming each key of ``options`` not in ``allowed`` (as for an unknown keyword argument)."""
    allowed = tuple(allowed)
    unknown = [name for name in options if name not in allowed]
    if unknown:
        raise TypeError(f"{where} got unknown option(s) {', '.join(map(repr, unknown))}; the options are "
                        f"{', '.join(allowed)}")


def _nodes(value: Any, what: str) -> tuple[Node, ...]:
    """``link``/``link_error`` as a tuple of signatures: one signature, or any iterable of them."""
    items = (value,) if hasattr(value, "to_dict") else tuple(value)
    for item in items:
        if not hasattr(item, "to_dict") or not hasattr(item, "apply_async"):
            raise TypeError(f"{what} takes signatures (task.s(...), chain, group, chord), got {item!r}")
    return items


def _aware(when: datetime) -> datetime:
    """``when`` with a time zone (a naive datetime is taken as UTC, as ``apply_async(eta=)`` takes it)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def read_when(value: Any) -> Any:
    """A datetime written by ``to_dict`` (ISO-8601) read back; anything else as it is."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _map_repr(sig: Signature) -> str:
    inner = sig.kwargs.get("task", {}).get("task", "?")
    star = "*" if sig.task == "taskfleet.starmap" else ""
    return f"[{inner}({star}x) for x in {list(sig.kwargs.get('it', ()))!r}]"


_REPRS = {"taskfleet.map": _map_repr, "taskfleet.starmap": _map_repr}

