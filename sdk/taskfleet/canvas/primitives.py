"""The composite signatures: ``chain``, ``group``, ``chord`` and ``chunks`` (Celery's names and meanings).

- ``chain(a, b, c)`` (or ``a | b | c``): one after the other, each given the previous result as its first argument
  (unless immutable); its result is the last task's.
- ``group(a, b, c)`` / ``group(task.s(i) for i in ...)``: all at once; its result is a ``GroupResult``, in order.
- ``chord(header, body)`` (or ``group(...) | body``): the body runs once, after every header task finished, with their
  results in header order as its first argument; its result is the body's.
- ``task.chunks(items, n)``: a group of ``taskfleet.starmap`` calls over ``n``-item chunks of ``items``.

Like ``Signature`` they are frozen values: ``set``, ``link``, ``link_error`` and ``clone`` return new ones. Their
options (``COMPOSITE_OPTIONS``) apply to every task inside when it is sent, overriding the task's own; ``countdown``
and ``eta`` apply to the tasks sent first (a chain's first step, a group's members, a chord's header).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self, TypeAlias, cast

from taskfleet.signature import Signature, check_options, check_send_options

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.canvas.group_result import GroupResult
    from taskfleet.result import AsyncResult

#: What ``set()`` and ``apply_async()`` of a composite take: routing for every task inside (``queue``, ``priority``,
#: ``expires``) and a delay for the tasks sent first (``countdown`` or ``eta``).
COMPOSITE_OPTIONS = ("queue", "priority", "expires", "countdown", "eta")
#: The options that reach every task inside a composite, not only those sent first.
ROUTE_OPTIONS = ("queue", "priority", "expires")


class Composite(ABC):
    """What chain, group, chord and chunks share: options, composition (``|``), links and sending."""

    options: Mapping[str, Any]

    @property
    @abstractmethod
    def app(self) -> App | None:
        """The app of the first task inside that has one."""

    @abstractmethod
    def link(self, callback: Node) -> Self:
        """Send this workflow's result to ``callback``: the tasks inside are changed in place, as in Celery, and
        ``self`` is returned (see each composite for which tasks)."""

    @abstractmethod
    def link_error(self, errback: Node) -> Self:
        """Send ``errback`` when this workflow fails: in place, as ``link``."""

    def on_error(self, errback: Node) -> Self:
        """``link_error``, returning this workflow (Celery's ``on_error``): ``(a | b).on_error(eb).delay()``."""
        return self.link_error(errback)

    @abstractmethod
    def clone(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> Self:
        """A copy with ``args``/``kwargs`` applied to the tasks it sends first and ``options`` set."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with a ``kind`` (``taskfleet.canvas.codec.node_from_dict`` reads it back)."""

    def set(self, **options: Any) -> Self:
        """A copy with these ``COMPOSITE_OPTIONS`` set (None keeps the current value); unknown ones raise
        ``TypeError``."""
        check_options(options, COMPOSITE_OPTIONS, f"{type(self).__name__.lower()}.set")
        merged = {**self.options, **{k: v for k, v in options.items() if v is not None}}
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        object.__setattr__(copy, "options", MappingProxyType(merged))
        check_send_options(merged)
        return copy

    def __or__(self, other: Node) -> Node:
        from taskfleet.canvas.composition import compose

        return compose(cast("Node", self), other)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult | GroupResult:
        """``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> AsyncResult | GroupResult:
        """Send it: ``args``/``kwargs`` go to the tasks sent first (as partial arguments); ``options`` are
        ``COMPOSITE_OPTIONS`` plus ``link`` and ``link_error``. Returns the result of what runs last."""
        from taskfleet.canvas.launch import launch

        return launch(cast("Node", self), tuple(args), kwargs, options)

    def _options_repr(self) -> str:
        return "".join(f", {k}={v!r}" for k, v in self.options.items())


@dataclass(frozen=True, init=False)
class Chain(Composite):
    """``chain(a, b, c)``: ``a`` runs, then ``b`` with ``a``'s result in front of its arguments, then ``c`` with
    ``b``'s. Nested chains are flattened. A failed step stops it: the later steps never run and their results
    read as that failure. ``link`` goes to the last step, ``link_error`` to every step (only the failing one's run)."""

    tasks: tuple[Node, ...]
    options: Mapping[str, Any]

    def __init__(self, *tasks: Node | Iterable[Node], options: Mapping[str, Any] | None = None) -> None:
        steps: list[Node] = []
        for step in _members(tasks):
            if isinstance(step, Chain):
                steps.extend(_pushed(step.tasks, step.options, entries=1))
            else:
                steps.append(step)
        object.__setattr__(self, "tasks", tuple(steps))
        object.__setattr__(self, "options", MappingProxyType(dict(options or {})))

    @property
    def app(self) -> App | None:
        return _first_app(self.tasks)

    def link(self, callback: Node) -> Chain:
        """The last step's result goes to ``callback``."""
        if not self.tasks:
            raise ValueError("an empty chain has no result to link")
        self.tasks[-1].link(callback)
        return self

    def link_error(self, errback: Node) -> Chain:
        """``errback`` runs for whichever step fails (once: the chain stops there)."""
        for step in self.tasks:
            step.link_error(errback)
        return self

    def clone(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> Chain:
        """Partial arguments go to the first step."""
        tasks = self.tasks
        if tasks and (args or kwargs):
            tasks = (tasks[0].clone(tuple(args), kwargs), *tasks[1:])
        return self._replace(tasks=tasks).set(**options)

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult | GroupResult:
        """Send it (``apply_async(args, kwargs)``), as Celery's ``chain(...)()`` does."""
        return self.apply_async(args, kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "chain", "tasks": [t.to_dict() for t in self.tasks], **_options_dict(self.options)}

    def _replace(self, *, tasks: tuple[Node, ...]) -> Chain:
        return Chain(*tasks, options=self.options)

    def __repr__(self) -> str:
        inner = " | ".join(repr(t) if not isinstance(t, Chain) else f"({t!r})" for t in self.tasks)
        return f"chain({inner}{self._options_repr()})" if self.options or len(self.tasks) < 2 else inner


@dataclass(frozen=True, init=False)
class Group(Composite):
    """``group(a, b, c)``: all sent at once; the result is a ``GroupResult`` with their results in this order. Nested
    groups are flattened (their members join this one). ``id`` is the group's (and its ``GroupResult``'s) id,
    assigned when it is sent unless given. ``link`` raises (use a chord); ``link_error`` goes to every member."""

    tasks: tuple[Node, ...]
    id: str | None
    options: Mapping[str, Any]

    def __init__(self, *tasks: Node | Iterable[Node], id: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        members: list[Node] = []
        for member in _members(tasks):
            if isinstance(member, Chunks):
                member = member.group()
            if isinstance(member, Group):
                members.extend(_pushed(member.tasks, member.options, entries=len(member.tasks)))
            else:
                members.append(member)
        object.__setattr__(self, "tasks", tuple(members))
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "options", MappingProxyType(dict(options or {})))

    @property
    def app(self) -> App | None:
        return _first_app(self.tasks)

    def link(self, callback: Node) -> Group:
        """A group has no single result to pass on: ``TypeError`` (as Celery's ``group.apply_async(link=)``);
        use ``chord(group, callback)`` / ``group | callback``."""
        raise TypeError("cannot link a callback to a group: use a chord (group(...) | callback)")

    def link_error(self, errback: Node) -> Group:
        """``errback`` runs for each member that fails."""
        for member in self.tasks:
            member.link_error(errback)
        return self

    def clone(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> Group:
        """Partial arguments go to every member."""
        members = self.tasks if not (args or kwargs) else tuple(m.clone(tuple(args), kwargs) for m in self.tasks)
        return Group(*members, id=self.id, options=self.options).set(**options)

    def __call__(self, *args: Any, **options: Any) -> AsyncResult | GroupResult:
        """Send it, ``args`` in front of each member's (Celery's ``group(...)(*args)``)."""
        return self.apply_async(args, **options)

    def __len__(self) -> int:
        return len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "group", "tasks": [t.to_dict() for t in self.tasks]}
        if self.id is not None:
            out["id"] = self.id
        return {**out, **_options_dict(self.options)}

    def __repr__(self) -> str:
        return f"group([{', '.join(map(repr, self.tasks))}]{self._options_repr()})"


@dataclass(frozen=True, init=False)
class Chord(Composite):
    """``chord(header, body)``: the header (a group) runs, then the body once with the header's results, in header
    order, as its first argument; an empty header runs the body with ``[]``. A failed header task (after its
    retries) stops it: the body does not run, its result reads as ``ChordError`` naming that task, and the body's
    errbacks run once. The result is the body's (its ``parent``: the header's ``GroupResult``). ``link`` and
    ``link_error`` go to the body. Needs a result backend (the join is kept there)."""

    header: Group
    body: Node | None
    options: Mapping[str, Any]

    def __init__(self, header: Group | Iterable[Node], body: Node | None = None, *,
                 options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(header, Group):
            header = Group(header)
        elif header.options:  # the header's own options stay with its tasks
            header = Group(*_pushed(header.tasks, header.options, entries=len(header.tasks)), id=header.id)
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "options", MappingProxyType(dict(options or {})))

    @property
    def id(self) -> str | None:
        """The chord's id: its header group's (the key of its join in the result backend)."""
        return self.header.id

    @property
    def tasks(self) -> tuple[Node, ...]:
        """The header's tasks (as in Celery)."""
        return self.header.tasks

    @property
    def app(self) -> App | None:
        return _first_app((*self.header.tasks, *((self.body,) if self.body is not None else ())))

    def link(self, callback: Node) -> Chord:
        self._body().link(callback)
        return self

    def link_error(self, errback: Node) -> Chord:
        self._body().link_error(errback)
        return self

    def clone(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> Chord:
        """Partial arguments go to every header task."""
        return Chord(self.header.clone(args, kwargs), self.body, options=self.options).set(**options)

    def __call__(self, body: Node | None = None, **options: Any) -> AsyncResult | GroupResult:
        """``chord(header)(body)``: send the chord with ``body`` (or its own)."""
        chord = self if body is None else self._with_body(body)
        return chord.apply_async(**options)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "chord", "header": [t.to_dict() for t in self.header.tasks],
                               "body": None if self.body is None else self.body.to_dict()}
        if self.header.id is not None:
            out["id"] = self.header.id
        return {**out, **_options_dict(self.options)}

    def _body(self) -> Node:
        if self.body is None:
            raise ValueError("this chord has no body yet: chord(header, body) or chord(header)(body)")
        return self.body

    def _with_body(self, body: Node) -> Chord:
        return Chord(self.header, body, options=self.options)

    def __repr__(self) -> str:
        return f"chord([{', '.join(map(repr, self.header.tasks))}], {self.body!r}{self._options_repr()})"


@dataclass(frozen=True, init=False)
class Chunks(Composite):
    """``task.chunks(items, n)``: ``items`` (each a tuple of arguments) cut into chunks of ``n``, each run by one
    ``taskfleet.starmap`` task: a group whose result is the list of the chunks' result lists. ``group()`` gives
    that group."""

    task: Signature
    items: tuple[Any, ...]
    n: int
    options: Mapping[str, Any]

    def __init__(self, task: Signature, items: Iterable[Any], n: int, *,
                 options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"chunks need a chunk size >= 1, got {n!r}")
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "items", tuple(tuple(item) for item in items))
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "options", MappingProxyType(dict(options or {})))

    @property
    def app(self) -> App | None:
        return self.task.app

    def group(self) -> Group:
        """The group of ``taskfleet.starmap`` calls, one per chunk, in order."""
        from taskfleet.canvas.builtins import xstarmap

        chunks = [self.items[start:start + self.n] for start in range(0, len(self.items), self.n)]
        return Group(*(xstarmap(self.task, chunk) for chunk in chunks), options=self.options)

    def link(self, callback: Node) -> Chunks:
        raise TypeError("cannot link a callback to chunks (a group): use a chord (task.chunks(...) | callback)")

    def link_error(self, errback: Node) -> Chunks:
        self.task.link_error(errback)
        return self

    def clone(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> Chunks:
        if args or kwargs:
            raise TypeError("chunks take no partial arguments: their items are the arguments")
        return self.set(**options)

    def __call__(self, **options: Any) -> AsyncResult | GroupResult:
        return self.apply_async(**options)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "chunks", "task": self.task.to_dict(), "items": [list(i) for i in self.items], "n": self.n,
                **_options_dict(self.options)}

    def __repr__(self) -> str:
        return f"chunks({self.task!r}, {len(self.items)} items, n={self.n}{self._options_repr()})"


#: Any signature: one task call or a composite.
Node: TypeAlias = Signature | Chain | Group | Chord | Chunks

# Celery's spellings.
chain = Chain
group = Group
chord = Chord
chunks = Chunks


def is_node(value: object) -> bool:
    """Whether ``value`` is a signature (a task call or a composite)."""
    return isinstance(value, Signature | Composite)


def _members(args: tuple[Any, ...]) -> list[Node]:
    """``f(a, b)`` or ``f([a, b])`` or ``f(generator)``: the signatures given, checked."""
    items: Iterable[Any] = args
    if len(args) == 1 and not is_node(args[0]):
        items = args[0]
    members = list(items)
    for member in members:
        if not is_node(member):
            raise TypeError(f"expected signatures (task.s(...), chain, group, chord), got {member!r}")
    return members


def _pushed(nodes: tuple[Node, ...], options: Mapping[str, Any], *, entries: int) -> list[Node]:
    """``nodes`` taken out of a composite with ``options``: every node gets the routing options, the first
    ``entries`` (those the composite sends first) all of them."""
    if not options:
        return list(nodes)
    route = {key: value for key, value in options.items() if key in ROUTE_OPTIONS}
    return [node.set(**(options if index < entries else route)) for index, node in enumerate(nodes)]


def _first_app(nodes: Iterable[Node]) -> App | None:
    return next((node.app for node in nodes if node.app is not None), None)


def _options_dict(options: Mapping[str, Any]) -> dict[str, Any]:
    if not options:
        return {}
    return {"options": {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in options.items()}}
