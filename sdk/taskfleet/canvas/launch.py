"""Sending a signature (``sig.apply_async()``, ``chain(...).delay()``, ...): freeze it, check it can run, publish the
messages it sends first in one batch, and hand back the result of what runs last, linked to its parents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskfleet.canvas.codec import node_from_dict
from taskfleet.canvas.freezing import freeze, needs_backend
from taskfleet.canvas.group_result import GroupResult
from taskfleet.canvas.planner import Planner
from taskfleet.canvas.primitives import COMPOSITE_OPTIONS, Chain, Chord, Group, Node
from taskfleet.errors import ConfigurationError
from taskfleet.producer import Producer
from taskfleet.result import AsyncResult
from taskfleet.settings import PublishRetry
from taskfleet.signature import SEND_OPTIONS, Signature, check_options

if TYPE_CHECKING:
    from taskfleet.app import App

#: The message of ``ConfigurationError`` when a chord is sent by an app without a result backend.
NO_BACKEND = ("a chord needs a result backend, where its header's results are joined: pass "
              "App(result_backend='redis://...') (or sqlite:///...)")

Result = AsyncResult | GroupResult


def launch(node: Node, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None,
           options: Mapping[str, Any]) -> Result:
    """Send ``node`` through its app with ``args``/``kwargs`` applied to the tasks it sends first and ``options``
    (a task call's ``SEND_OPTIONS`` or a composite's ``COMPOSITE_OPTIONS``, plus ``link``, ``link_error`` and the
    publish's ``retry``/``retry_policy``, see ``Task.apply_async``). Unknown options raise ``TypeError``; a chord
    without a result backend ``ConfigurationError``."""
    app = node.app
    if app is None:
        raise ConfigurationError(f"{node!r} has no app: make its signatures with task.s(...) or app.signature(...)")
    options = dict(options)
    retry = PublishRetry.for_call(options.pop("retry", True), options.pop("retry_policy", None))
    callbacks = _as_list(options.pop("link", None))
    errbacks = _as_list(options.pop("link_error", None))
    if callbacks or errbacks:
        # Links given to this send belong to it alone: ``link``/``link_error`` change a workflow's tasks in place,
        # so they go on a copy (its plain data read back), never on the caller's signature.
        node = node_from_dict(node.to_dict(), app=app)
        for callback in callbacks:
            node.link(callback)
        for errback in errbacks:
            node.link_error(errback)
    if isinstance(node, Signature):
        check_options(options, SEND_OPTIONS, f"{node.task}.apply_async")
    else:
        check_options(options, COMPOSITE_OPTIONS, f"{type(node).__name__.lower()}.apply_async")
    frozen = freeze(node.set(**options), app)
    if needs_backend(frozen) and app.backend is None:
        raise ConfigurationError(NO_BACKEND)
    Producer(app).publish_many(Planner(app).messages(frozen, args, kwargs), retry=retry)
    return result_of(frozen, app)


def result_of(node: Node, app: App, parent: Result | None = None) -> Result:
    """The result handle of frozen ``node``: a task call's ``AsyncResult``, a group's ``GroupResult``, a chain's last
    step's (each step's ``parent`` the step before), a chord's body's (whose ``parent`` is the header's
    ``GroupResult``); ``parent`` is the result of what ran before ``node``."""
    if isinstance(node, Signature):
        assert node.task_id is not None
        return AsyncResult(node.task_id, app=app, parent=parent)
    if isinstance(node, Chain):
        result = parent
        for step in node.tasks:
            result = result_of(step, app, result)
        assert result is not None
        return result
    if isinstance(node, Group):
        assert node.id is not None
        return GroupResult(node.id, [result_of(member, app) for member in node.tasks], app=app, parent=parent)
    if isinstance(node, Chord):
        assert node.body is not None
        return result_of(node.body, app, result_of(node.header, app, parent))
    raise ValueError(f"{node!r} is not frozen")


def _as_list(value: Any) -> list[Node]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
