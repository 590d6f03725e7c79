"""``Planner``: which messages a frozen signature sends now, each carrying the workflow data (``Workflow``) that says
what its worker sends after it. The caller plans a workflow's first messages (``launch``); a worker plans the
follow-ups of a finished task with the same rules (taskfleet.worker.followups).

- a task call: its message, with its callbacks, errbacks and what follows it (``Continuation``);
- a chain: its first step, followed by the other steps and then what follows the chain;
- a group: each member, followed by nothing; a group followed by more (a step of a chain, or reporting to a chord
  as one result) is sent as a chord instead, whose body is that step (or ``taskfleet.identity``, which hands the
  list on);
- a chord: each header task, reporting to the chord's join (``Join``); an empty header sends the body with ``[]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskfleet.canvas.primitives import Chain, Chord, Group, Node
from taskfleet.canvas.workflow import Continuation, Join, Workflow
from taskfleet.message import Message
from taskfleet.producer import Producer
from taskfleet.signature import Signature

if TYPE_CHECKING:
    from taskfleet.app import App

#: The builtin task that returns its first argument: the body of the chord a group becomes when it must report to
#: a chord join as one result (registered in every app by taskfleet.canvas.builtins).
IDENTITY = "taskfleet.identity"
_NOTHING_AFTER = Continuation()


class Planner:
    """Plans messages for ``app``. ``follow_up``: they are follow-ups a worker sends after the task ``parent``
    (marked so a duplicate is recognised, and given ``parent`` as their parent and its root as their root)."""

    def __init__(self, app: App, *, follow_up: bool = False, parent: Message | None = None,
                 now: float | None = None) -> None:
        self._app = app
        self._producer = Producer(app)
        self._follow_up = follow_up
        self._parent_id = parent.id if parent is not None else None
        self._root_id = (parent.root_id or parent.id) if parent is not None else None
        self._now = time.time() if now is None else now

    def messages(self, node: Node, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None,
                 then: Continuation = _NOTHING_AFTER, group: str | None = None) -> list[Message]:
        """The messages that send frozen ``node`` now with ``args``/``kwargs`` applied to the tasks it sends first,
        and ``then`` to run after it; ``group``: the id of the group ``node`` is a member of."""
        if isinstance(node, Signature):
            return [self._call(node, args, kwargs, then, group)]
        if isinstance(node, Chain):
            return self.messages(node.tasks[0], args, kwargs, Continuation((*node.tasks[1:], *then.rest), then.join),
                                 group)
        if isinstance(node, Group):
            return self._group(node, args, kwargs, then, group)
        if isinstance(node, Chord):
            return self._chord(node, args, kwargs, then, group)
        raise ValueError(f"{node!r} is not frozen")

    def _group(self, node: Group, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, then: Continuation,
               group: str | None) -> list[Message]:
        assert node.id is not None
        if then.rest:  # chain(..., group, step, ...): Celery's upgrade to chord(group, step)
            return self._chord(Chord(node, then.rest[0]), args, kwargs, Continuation(then.rest[1:], then.join),
                               group)
        if then.join is not None:  # the whole group's result list is one part of a chord
            return self._chord(Chord(node, self._identity(node)), args, kwargs, then, group)
        return [message for member in node.tasks for message in self.messages(member, args, kwargs, group=node.id)]

    def _chord(self, node: Chord, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, then: Continuation,
               group: str | None) -> list[Message]:
        header, body = node.header, node.body
        assert header.id is not None
        assert body is not None
        if not header.tasks:
            return self.messages(body, ([],), None, then, group)
        size = len(header.tasks)
        return [message for index, member in enumerate(header.tasks)
                for message in self.messages(member, args, kwargs, Continuation(join=Join(header.id, index, size, body,
                                                                                          then)), header.id)]

    def _call(self, sig: Signature, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, then: Continuation,
              group: str | None) -> Message:
        call_args, call_kwargs = sig.merged(args, kwargs)
        message = self._producer.message(
            sig.task, call_args, call_kwargs, countdown=sig.countdown, eta=sig.eta, expires=sig.expiry(self._app),
            priority=sig.priority, queue=sig.queue, task_id=sig.task_id, headers=sig.headers, now=self._now,
            serializer=sig.serializer, compression=sig.compression)
        workflow = Workflow(sig.callbacks, sig.errbacks, then, group, self._follow_up).to_dict()
        if not workflow and self._parent_id is None:
            return message
        return message.replace(workflow=workflow or None, root_id=self._root_id, parent_id=self._parent_id)

    def _identity(self, node: Group) -> Signature:
        """The ``taskfleet.identity`` body for group ``node``: its task id derived from the group's, so the same
        follow-up planned twice has the same id; sent to the queue of the group's first task."""
        first = _first_call(node)
        return Signature(task=IDENTITY, task_id=uuid.uuid5(uuid.NAMESPACE_OID, f"{IDENTITY}:{node.id}").hex,
                         queue=first.queue if first is not None else None, app=self._app)


def _first_call(node: Node) -> Signature | None:
    if isinstance(node, Signature):
        return node
    if isinstance(node, Chord):
        return _first_call(node.header)
    tasks = getattr(node, "tasks", ())
    return _first_call(tasks[0]) if tasks else None
