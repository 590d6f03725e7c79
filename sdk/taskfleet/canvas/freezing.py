"""Freezing: what a signature becomes just before it is sent. Every task call gets its task id and every group its
id, now, so the whole workflow's ids are known to the caller (``AsyncResult.parent`` links) and every follow-up a
worker publishes later, maybe twice after a crash, carries the same ids. Composite options are pushed down to the
task calls (``COMPOSITE_OPTIONS``), a task call's routing (queue, priority) is decided by this app when its routes or
its tasks know it, ``chunks`` become their group and a group followed by more steps of a chain becomes a chord
(Celery's upgrade)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskfleet.canvas.primitives import ROUTE_OPTIONS, Chain, Chord, Chunks, Group, Node
from taskfleet.routing import decide, lookup
from taskfleet.signature import Signature

if TYPE_CHECKING:
    from taskfleet.app import App

_NO_OPTIONS: Mapping[str, Any] = {}


def new_id() -> str:
    """A new task or group id (``uuid4().hex``, as ``App.send`` makes them)."""
    return uuid.uuid4().hex


def freeze(node: Node, app: App, options: Mapping[str, Any] = _NO_OPTIONS) -> Node:
    """``node`` frozen (see the module docstring), ``options`` (composite options from outside) overriding those
    inside; every task call without an app gets ``app``. ``ValueError`` for an empty chain or a chord without
    body."""
    if isinstance(node, Signature):
        return _freeze_call(node, app, options)
    merged = {**node.options, **options}
    route = {key: value for key, value in merged.items() if key in ROUTE_OPTIONS}
    if isinstance(node, Chunks):
        return freeze(node.group(), app, options)
    if isinstance(node, Chain):
        steps = normalized(node.tasks)
        if not steps:
            raise ValueError("an empty chain has nothing to run")
        return Chain(freeze(steps[0], app, merged), *(freeze(step, app, route) for step in steps[1:]))
    if isinstance(node, Group):
        return Group(*(freeze(m, app, merged) for m in node.tasks), id=node.id or new_id())
    if node.body is None:
        raise ValueError(f"chord {node!r} has no body: chord(header, body) or chord(header)(body)")
    header_options = {**node.header.options, **merged}
    header = Group(*(freeze(m, app, header_options) for m in node.header.tasks), id=node.header.id or new_id())
    return Chord(header, freeze(node.body, app, route))


def normalized(steps: tuple[Node, ...]) -> tuple[Node, ...]:
    """A chain's steps with the first group that has steps after it made a chord: ``a, group, b, c`` becomes ``a,
    chord(group, chain(b, c))`` (the chord's body is normalized when it is frozen in turn)."""
    for index, step in enumerate(steps[:-1]):
        if isinstance(step, Group | Chunks):
            after = steps[index + 1:]
            body = after[0] if len(after) == 1 else Chain(*after)
            return (*steps[:index], Chord(step if isinstance(step, Group) else step.group(), body))
    return steps


def task_ids(node: Node) -> list[str]:
    """Every task id in frozen ``node``, in order (callbacks and errbacks not included); ``ValueError`` when a task
    call or group has none (it was not frozen)."""
    ids = []
    for call in calls(node):
        if call.task_id is None:
            raise ValueError(f"{call!r} has no task_id")
        ids.append(call.task_id)
    return ids


def calls(node: Node) -> list[Signature]:
    """Every task call in ``node``, in order (callbacks and errbacks not included); ``ValueError`` for chunks, a
    group without id or a chord without body (not frozen)."""
    if isinstance(node, Signature):
        return [node]
    if isinstance(node, Chain):
        return [call for step in node.tasks for call in calls(step)]
    if isinstance(node, Group):
        if node.id is None:
            raise ValueError(f"{node!r} has no id")
        return [call for member in node.tasks for call in calls(member)]
    if isinstance(node, Chord):
        if node.body is None:
            raise ValueError(f"{node!r} has no body")
        return [*calls(node.header), *calls(node.body)]
    raise ValueError(f"{node!r} is not frozen")


def errbacks_of(node: Node) -> list[tuple[Signature, Node]]:
    """The errbacks that run when frozen ``node`` cannot run at all (a chord header failed before it), each with
    the task call it belongs to: a task call's own, a chain's first step's, every group member's, a chord's body's
    (where a chord's and a chain's ``link_error`` put them)."""
    if isinstance(node, Signature):
        return [(node, errback) for errback in node.errbacks]
    if isinstance(node, Chain):
        return errbacks_of(node.tasks[0]) if node.tasks else []
    if isinstance(node, Group):
        return [pair for member in node.tasks for pair in errbacks_of(member)]
    if isinstance(node, Chord):
        return errbacks_of(node.body) if node.body is not None else []
    return errbacks_of(node.group())


def needs_backend(node: Node) -> bool:
    """Whether sending frozen ``node`` (or a follow-up it names) joins a chord, which needs a result backend."""
    if isinstance(node, Signature):
        return any(needs_backend(n) for n in (*node.callbacks, *node.errbacks))
    if isinstance(node, Chord):
        return True
    if isinstance(node, Chunks):
        return False
    return any(needs_backend(n) for n in node.tasks)


def _freeze_call(sig: Signature, app: App, options: Mapping[str, Any]) -> Signature:
    if options:
        sig = sig.set(**options)
    changes: dict[str, Any] = {
        "task_id": sig.task_id or new_id(),
        "callbacks": tuple(freeze(n, app) for n in sig.callbacks),
        "errbacks": tuple(freeze(n, app) for n in sig.errbacks),
        "app": sig.app or app,
    }
    # Its routing as this app knows it (its task_routes, its task): the worker that sends it later may not have the
    # task, nor the same routes. A serializer or compression is written down only when the call or a route gave it.
    task = app.tasks.get(sig.task)
    route = lookup(app, sig.task, sig.args, sig.kwargs, sig.route())
    if task is not None or route is not None:
        routing = decide(app, sig.task, sig.route(), route)
        changes.update(queue=routing.queue, priority=routing.priority, expires=sig.expiry(app))
        if route is not None:
            changes.update(serializer=sig.serializer or route.serializer,
                           compression=sig.compression or route.compression)
    return dataclasses.replace(sig, **changes)
