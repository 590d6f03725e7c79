"""The builtin tasks every ``App`` registers, and the signatures that call them (Celery's ``celery.map`` and
``celery.starmap``):

- ``taskfleet.map(task, it)``: one task that calls ``task`` (a signature dict; only its name is used) on each item
  of ``it`` in turn, in-process, and returns the list of results (``task.map(items)``);
- ``taskfleet.starmap(task, it)``: the same with each item spread as arguments (``task.starmap(items)``, and each
  chunk of ``task.chunks(items, n)``);
- ``taskfleet.identity(value)``: returns ``value``; the body of the chord a group becomes when its result list must
  reach a chord join as one result (taskfleet.canvas.planner).

A map is sent to the mapped task's queue (a worker there has its code) and is immutable, as in Celery: a chain's
previous result is not passed to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from taskfleet.canvas.planner import IDENTITY
from taskfleet.signature import Signature

if TYPE_CHECKING:
    from taskfleet.app import App

MAP = "taskfleet.map"
STARMAP = "taskfleet.starmap"
#: Every builtin task's name.
NAMES = (MAP, STARMAP, IDENTITY)


def register_builtins(app: App) -> None:
    """Register ``taskfleet.map``, ``taskfleet.starmap`` and ``taskfleet.identity`` in ``app``."""

    def map_(task: Mapping[str, Any], it: list[Any]) -> list[Any]:
        fn = app.get_task(_name(task))
        return [fn(item) for item in it]

    def starmap(task: Mapping[str, Any], it: list[list[Any]]) -> list[Any]:
        fn = app.get_task(_name(task))
        return [fn(*item) for item in it]

    def identity(value: Any) -> Any:
        return value

    app.task(name=MAP)(map_)
    app.task(name=STARMAP)(starmap)
    app.task(name=IDENTITY)(identity)


def xmap(task: Signature, items: Iterable[Any]) -> Signature:
    """One ``taskfleet.map`` task calling ``task`` on each of ``items`` (``task.map(items)``)."""
    return _over(MAP, task, [item for item in items])


def xstarmap(task: Signature, items: Iterable[Iterable[Any]]) -> Signature:
    """One ``taskfleet.starmap`` task calling ``task(*item)`` for each of ``items`` (``task.starmap(items)``)."""
    return _over(STARMAP, task, [list(item) for item in items])


def _over(builtin: str, task: Signature, items: list[Any]) -> Signature:
    queue = task.queue
    if queue is None and task.app is not None:
        queue = task.routing(task.app).queue
    return Signature(task=builtin, kwargs={"task": {"task": task.task}, "it": items}, immutable=True, queue=queue,
                     priority=task.priority, app=task.app)


def _name(task: Mapping[str, Any] | str) -> str:
    name = task if isinstance(task, str) else task.get("task")
    if not isinstance(name, str):
        raise TypeError(f"{MAP}/{STARMAP} take the task as a signature dict, got {task!r}")
    return name
