"""The workflow data a task message carries (envelope field ``workflow``, docs/protocol.md): what a worker does
after the task finishes. Plain data both ways: ``Workflow.to_dict`` writes it, ``Workflow.from_dict`` reads it back
and raises ``DecodeError`` (the message is dead-lettered) when it is malformed.

::

    {"link": [sig, ...],        # callbacks: sent with the result after a success
     "link_error": [sig, ...],  # errbacks: sent with (request, exc, traceback) after a final failure
     "chain": [sig, ...],       # the rest of the chain, next step first
     "chord": {                 # the chord join this task reports to (only once "chain" is done)
        "id": str, "index": int, "size": int,   # the join, this task's place in the header, the header's size
        "body": sig,                            # sent with every header result once all are in
        "chain": [sig, ...], "chord": {...}},   # what follows the body: as above (a chord in a chord's header)
     "group": str,              # the group this task is a member of
     "follow_up": true}         # sent by a worker as a follow-up (a duplicate is recognised by its stored state)

Every key is optional and left out when empty; a message without any has no ``workflow`` field at all. Every task
id in it (``task_id`` of each signature) was assigned when the workflow was sent, so a worker that publishes the
same follow-up twice (after a crash) publishes the same task ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard, overload

from taskfleet.canvas.codec import node_from_dict
from taskfleet.canvas.freezing import task_ids
from taskfleet.canvas.primitives import Node
from taskfleet.errors import ConfigurationError, DecodeError

if TYPE_CHECKING:
    from taskfleet.app import App

_KEYS = frozenset({"link", "link_error", "chain", "chord", "group", "follow_up"})
_JOIN_KEYS = frozenset({"id", "index", "size", "body", "chain", "chord"})


class Steps(Sequence[Node]):
    """The rest of a chain as read from a message, next step first. A step is decoded when it is first used, and one
    never used is written back as it was read: the worker of each step of a long chain decodes the next step only,
    not the whole rest (which would make a chain of n steps cost n^2 decodes). A malformed later step is found
    (and its message dead-lettered) by the worker of the step before it."""

    __slots__ = ("_app", "_decoded", "_raw")

    def __init__(self, raw: Sequence[Any], app: App | None) -> None:
        self._raw = raw
        self._app = app
        self._decoded: dict[int, Node] = {}

    def __len__(self) -> int:
        return len(self._raw)

    @overload
    def __getitem__(self, index: int) -> Node: ...

    @overload
    def __getitem__(self, index: slice) -> Steps: ...

    def __getitem__(self, index: int | slice) -> Node | Steps:
        if isinstance(index, slice):
            return Steps(self._raw[index], self._app)
        position = range(len(self._raw))[index]
        node = self._decoded.get(position)
        if node is None:
            node = self._decoded[position] = _node(self._raw[position], self._app, "chain")
        return node

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def to_dicts(self) -> list[Any]:
        """Each step as written in a message: as read, unless it was decoded."""
        return [node.to_dict() if (node := self._decoded.get(i)) is not None else raw
                for i, raw in enumerate(self._raw)]


@dataclass(frozen=True, slots=True)
class Continuation:
    """What runs after a task or a chord body: ``rest`` (the rest of its chain, next step first; ``Steps`` when read
    from a message), then the chord ``join`` the last of them reports to."""

    rest: Sequence[Node] = ()
    join: Join | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.rest:
            rest = self.rest
            out["chain"] = rest.to_dicts() if isinstance(rest, Steps) else [node.to_dict() for node in rest]
        if self.join is not None:
            out["chord"] = self.join.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], app: App | None) -> Continuation:
        steps = _list(raw, "chain")
        if not all(isinstance(step, dict) for step in steps):
            raise DecodeError("malformed workflow: chain: each step must be a mapping")
        rest = Steps(steps, app)
        if steps:
            rest[0]  # the next step is checked now: a malformed one fails this message, before the task runs
        join_raw = raw.get("chord")
        return cls(rest, None if join_raw is None else Join.from_dict(join_raw, app))


@dataclass(frozen=True, slots=True)
class Join:
    """The chord join a header task reports to: the chord's ``id``, this task's ``index`` in the header, the header's
    ``size``, the ``body`` sent once every result is in, and what follows the body (``then``)."""

    id: str
    index: int
    size: int
    body: Node
    then: Continuation = field(default_factory=Continuation)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "index": self.index, "size": self.size, "body": self.body.to_dict(),
                **self.then.to_dict()}

    @classmethod
    def from_dict(cls, raw: Any, app: App | None) -> Join:
        if not isinstance(raw, dict):
            raise DecodeError("malformed workflow: 'chord' must be a mapping")
        _no_unknown(raw, _JOIN_KEYS, "chord")
        chord_id, index, size = raw.get("id"), raw.get("index"), raw.get("size")
        if not isinstance(chord_id, str) or not chord_id:
            raise DecodeError("malformed workflow: chord 'id' must be a non-empty string")
        if not (_is_int(size) and _is_int(index) and 0 <= index < size):
            raise DecodeError(f"malformed workflow: chord index {index!r} must be in 0..size-1 (size {size!r})")
        return cls(chord_id, int(index), int(size), _node(raw.get("body"), app, "chord body"),
                   Continuation.from_dict(raw, app))


@dataclass(frozen=True, slots=True)
class Workflow:
    """The workflow data of one message (see the module docstring)."""

    callbacks: tuple[Node, ...] = ()
    errbacks: tuple[Node, ...] = ()
    then: Continuation = field(default_factory=Continuation)
    group: str | None = None
    follow_up: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The envelope's ``workflow`` value; empty (so left out) for a plain task."""
        out: dict[str, Any] = {}
        if self.callbacks:
            out["link"] = [node.to_dict() for node in self.callbacks]
        if self.errbacks:
            out["link_error"] = [node.to_dict() for node in self.errbacks]
        out.update(self.then.to_dict())
        if self.group is not None:
            out["group"] = self.group
        if self.follow_up:
            out["follow_up"] = True
        return out

    @classmethod
    def from_dict(cls, raw: Any, app: App | None = None) -> Workflow:
        """Read an envelope's ``workflow`` value, its signatures bound to ``app``; ``DecodeError`` when malformed."""
        if not isinstance(raw, dict):
            raise DecodeError("malformed workflow: not a mapping")
        _no_unknown(raw, _KEYS, "workflow")
        group = raw.get("group")
        if group is not None and (not isinstance(group, str) or not group):
            raise DecodeError("malformed workflow: 'group' must be a non-empty string")
        follow_up = raw.get("follow_up", False)
        if not isinstance(follow_up, bool):
            raise DecodeError("malformed workflow: 'follow_up' must be true or false")
        return cls(
            callbacks=tuple(_node(n, app, "link") for n in _list(raw, "link")),
            errbacks=tuple(_node(n, app, "link_error") for n in _list(raw, "link_error")),
            then=Continuation.from_dict(raw, app), group=group, follow_up=follow_up,
        )


def _node(raw: Any, app: App | None, what: str) -> Node:
    try:
        node = node_from_dict(raw, app=app)
    except (ConfigurationError, TypeError, ValueError, KeyError) as exc:
        raise DecodeError(f"malformed workflow: {what}: {exc}") from exc
    if _unfrozen(node):
        raise DecodeError(f"malformed workflow: {what}: a signature without a task_id: {node!r}")
    return node


def _unfrozen(node: Node) -> bool:
    """Whether some task in ``node`` has no task id (a workflow is sent with every id assigned)."""
    try:
        task_ids(node)
    except ValueError:
        return True
    return False


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"malformed workflow: {key!r} must be a list")
    return value


def _no_unknown(raw: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    unknown = set(raw) - known
    if unknown:
        raise DecodeError(f"malformed workflow: unknown {what} keys {sorted(unknown)}")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
