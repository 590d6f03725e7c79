"""Signatures as plain data: ``node_from_dict`` reads back what any signature's ``to_dict`` wrote (a task call has
no ``kind``; composites have ``"chain"``, ``"group"``, ``"chord"`` or ``"chunks"``), and ``bind`` gives every task
call in a signature an app."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskfleet.canvas.primitives import Chain, Chord, Chunks, Group, Node
from taskfleet.errors import ConfigurationError
from taskfleet.signature import Signature, read_when

if TYPE_CHECKING:
    from taskfleet.app import App

_COMPOSITE_KEYS = {
    "chain": frozenset({"kind", "tasks", "options"}),
    "group": frozenset({"kind", "tasks", "id", "options"}),
    "chord": frozenset({"kind", "header", "body", "id", "options"}),
    "chunks": frozenset({"kind", "task", "items", "n", "options"}),
}


def node_from_dict(raw: Any, *, app: App | None = None) -> Node:
    """The signature ``raw`` describes (see the module docstring), bound to ``app``. ``ConfigurationError`` when it
    is malformed."""
    if isinstance(raw, Signature | Chain | Group | Chord | Chunks):
        return bind(raw, app) if app is not None else raw
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"a signature is a mapping, got {raw!r}")
    kind = raw.get("kind")
    if kind is None:
        return Signature.from_dict(raw, app=app)
    keys = _COMPOSITE_KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise ConfigurationError(f"unknown signature kind {kind!r}")
    unknown = set(raw) - keys
    if unknown:
        raise ConfigurationError(f"unknown {kind} fields: {sorted(unknown)}")
    options = _options(raw.get("options"))
    if kind == "chain":
        return Chain(*_nodes(raw.get("tasks"), app)).set(**options)
    if kind == "group":
        return Group(*_nodes(raw.get("tasks"), app), id=_opt_str(raw, "id")).set(**options)
    if kind == "chord":
        body = raw.get("body")
        return Chord(Group(*_nodes(raw.get("header"), app), id=_opt_str(raw, "id")),
                     None if body is None else node_from_dict(body, app=app)).set(**options)
    task = node_from_dict(raw.get("task"), app=app)
    if not isinstance(task, Signature):
        raise ConfigurationError("chunks need a task call")
    items, n = raw.get("items"), raw.get("n")
    if not isinstance(items, list) or not isinstance(n, int):
        raise ConfigurationError("chunks need a list of items and a chunk size")
    return Chunks(task, items, n).set(**options)


def bind(node: Node, app: App | None) -> Node:
    """``node`` with ``app`` as the app of every task call in it (callbacks and errbacks included)."""
    if isinstance(node, Signature):
        return dataclasses.replace(node, app=app, callbacks=tuple(bind(n, app) for n in node.callbacks),
                                   errbacks=tuple(bind(n, app) for n in node.errbacks))
    if isinstance(node, Chain):
        return Chain(*(bind(n, app) for n in node.tasks), options=node.options)
    if isinstance(node, Group):
        return Group(*(bind(n, app) for n in node.tasks), id=node.id, options=node.options)
    if isinstance(node, Chord):
        header = Group(*(bind(n, app) for n in node.header.tasks), id=node.header.id)
        return Chord(header, None if node.body is None else bind(node.body, app), options=node.options)
    bound_task = bind(node.task, app)
    assert isinstance(bound_task, Signature)
    return Chunks(bound_task, node.items, node.n, options=node.options)


def _nodes(raw: Any, app: App | None) -> list[Node]:
    if not isinstance(raw, list):
        raise ConfigurationError(f"expected a list of signatures, got {raw!r}")
    return [node_from_dict(item, app=app) for item in raw]


def _options(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"options must be a mapping, got {raw!r}")
    return {key: read_when(value) if key in ("eta", "expires") else value for key, value in raw.items()}


def _opt_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"{key!r} must be a non-empty string")
    return value
