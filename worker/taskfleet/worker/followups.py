"""What a worker sends after a task finished, from the workflow data its message carries (taskfleet.canvas.workflow).

The executor calls this after it stored the task's final state and before it decides to ack, so a worker that dies
in between leaves the message to be delivered again, and the redelivery (which finds the final state stored) does
the follow-ups again from that stored state (``redo``). Every follow-up's task id was assigned when the workflow
was sent, so doing them twice sends the same ids; the copy that comes second finds its id finished and is acked
unrun (the executor checks follow-up messages for that).

After a success: the callbacks (``link``) get the result; then either the chain's next step gets it, or, at the end
of a chain inside a chord's header, the part is recorded in the chord's join (``ResultBackend.chord_part``) and the
part that completes the header sends the body with every result, in header order, then marks the firing done
(``chord_fired``). A redelivered part that fired and did not mark it done fires again; any other part never does.

After a final failure (retries used up, a failure without retries, expiry, an unregistered task): the errbacks
(``link_error``) get ``(request, exc, traceback)`` (``errback_args``); every later task of the chain gets the same
failure stored (so waiting on the chain's result raises it, not hangs); and a chord the chain reports to fails:
its first failed part (recorded once) stores ``ChordError`` naming the failed task as the result of the body and of
what follows it, sends the body's errbacks, passes the failure on to an enclosing chord, and marks it done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from taskfleet.app import App
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.backends.joins import ChordPart, JoinAction
from taskfleet.canvas.freezing import calls, errbacks_of
from taskfleet.canvas.planner import Planner
from taskfleet.canvas.primitives import Node
from taskfleet.canvas.workflow import Continuation, Join, Workflow
from taskfleet.errors import ChordError, MessageError, ResultError, TaskRevoked
from taskfleet.message import Message
from taskfleet.producer import Producer
from taskfleet.signature import Signature
from taskfleet.states import State
from taskfleet.worker.logging import get_logger

log = get_logger("taskfleet.worker")


@dataclass(frozen=True, slots=True)
class Failure:
    """A final failure as it is passed on: the stored state (FAILURE, or REVOKED for an expired task) and the
    exception's record fields (``exc_type`` is ``module.QualName``)."""

    state: State
    exc_type: str
    exc_message: str
    exc_args: list[Any] | None = None
    traceback: str | None = None

    @classmethod
    def of(cls, fields: Mapping[str, Any], state: State = State.FAILURE) -> Failure:
        """From ``exception_fields`` (taskfleet.worker.executor) or a stored record's fields."""
        return cls(state, fields.get("exc_type") or "Exception", fields.get("exc_message") or "",
                   fields.get("exc_args"), fields.get("traceback"))

    def record_fields(self) -> dict[str, Any]:
        return {"exc_type": self.exc_type, "exc_message": self.exc_message, "exc_args": self.exc_args,
                "traceback": self.traceback}


def errback_args(request: Signature | Message, failure: Failure, group: str | None = None) -> tuple[Any, ...]:
    """What an errback gets in front of its own arguments, a JSON form of Celery's ``(request, exc, traceback)``:
    ``request`` ``{"id", "task", "args", "kwargs", "retries", "queue", "group"}`` of the failed task, ``exc``
    ``{"type": "module.QualName", "message": str, "args": list or null}``, ``traceback`` the formatted traceback
    (a string, or null)."""
    if isinstance(request, Message):
        about = {"id": request.id, "task": request.task, "args": list(request.args), "kwargs": dict(request.kwargs),
                 "retries": request.retries, "queue": request.queue, "group": group}
    else:
        about = {"id": request.task_id, "task": request.task, "args": list(request.args),
                 "kwargs": dict(request.kwargs), "retries": 0, "queue": request.queue, "group": group}
    exc = {"type": failure.exc_type, "message": failure.exc_message, "args": failure.exc_args}
    return about, exc, failure.traceback


class FollowUps:
    """Sends the follow-ups of finished tasks for one worker child (see the module docstring)."""

    def __init__(self, app: App, backend: ResultBackend | None, *,
                 exception_fields: Callable[[BaseException], dict[str, Any]]) -> None:
        self._app = app
        self._backend = backend
        self._producer = Producer(app)
        self._exception_fields = exception_fields

    def read(self, msg: Message) -> Workflow | None:
        """``msg``'s workflow data (None for a plain task); ``DecodeError`` when it is malformed."""
        if msg.workflow is None:
            return None
        return Workflow.from_dict(msg.workflow, self._app)

    def succeeded(self, msg: Message, workflow: Workflow, result: Any) -> None:
        """Send what follows the success of ``msg``'s task with ``result``."""
        planner = Planner(self._app, follow_up=True, parent=msg)
        for callback in workflow.callbacks:
            self._send(planner, callback, (result,), Continuation(), on_error=None)
        then = workflow.then
        if then.rest:
            self._send(planner, then.rest[0], (result,), Continuation(then.rest[1:], then.join),
                       on_error=lambda error: self._fail_continuation(planner, then, error, msg.id, msg.task))
        elif then.join is not None:
            self._report(planner, then.join, ChordPart(True, result))

    def failed(self, msg: Message, workflow: Workflow, failure: Failure) -> None:
        """Send what follows the final failure of ``msg``'s task."""
        planner = Planner(self._app, follow_up=True, parent=msg)
        args = errback_args(msg, failure, workflow.group)
        for errback in workflow.errbacks:
            self._send(planner, errback, args, Continuation(), on_error=None)
        self._fail_continuation(planner, workflow.then, failure, msg.id, msg.task)

    def redo(self, msg: Message, workflow: Workflow, record: ResultRecord) -> None:
        """Send again what follows ``msg``'s task, from its stored final ``record`` (a redelivery of a message whose
        follow-ups may not all have been sent)."""
        if record.state is State.SUCCESS:
            self.succeeded(msg, workflow, record.result)
        elif record.state is State.REVOKED:
            self.failed(msg, workflow, self.revoked(record.exc_message or f"task {msg.id} was revoked"))
        else:
            self.failed(msg, workflow, Failure.of(record.to_dict()))

    def revoked(self, reason: str) -> Failure:
        """The failure of a task revoked (expired) before it ran."""
        return Failure.of(self._exception_fields(TaskRevoked(reason)), State.REVOKED)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _send(self, planner: Planner, node: Node, args: tuple[Any, ...], then: Continuation,
              on_error: Callable[[Failure], None] | None) -> None:
        """Publish the messages of ``node``. One that cannot be encoded (too large, say) is not sent: ``on_error``
        gets the failure (the workflow goes on as if that task had failed); broker errors propagate."""
        try:
            self._producer.publish_many(planner.messages(node, args, None, then))
        except MessageError as exc:
            log.error("could not send a workflow's follow-up", follow_up=repr(node), error=str(exc))
            if on_error is not None:
                on_error(Failure.of(self._exception_fields(exc)))

    def _report(self, planner: Planner, join: Join, part: ChordPart) -> None:
        """Record ``part`` in ``join`` and carry out the join's decision."""
        decision = self._join_backend(join).chord_part(join.id, join.index, join.size, part)
        if decision.action is JoinAction.FIRE:
            body = join.body
            self._send(planner, body, (decision.results,), join.then,
                       on_error=lambda error: self._fail_continuation(
                           planner, Continuation((body, *join.then.rest), join.then.join), error, join.id, "chord"))
            self._join_backend(join).chord_fired(join.id)
            log.info("chord fired", chord_id=join.id, size=join.size, by_index=join.index)
        elif decision.action is JoinAction.FAIL:
            self._fail_chord(planner, join, decision.failure)

    def _fail_continuation(self, planner: Planner, then: Continuation, failure: Failure, task_id: str,
                           task: str) -> None:
        """What follows a failed task (``task_id``) will not run: the rest of its chain reads as ``failure``, and the
        chord it reports to is told its part failed."""
        self._store_failed([call for node in then.rest for call in calls(node)], failure)
        if then.join is not None:
            self._report(planner, then.join, ChordPart(False, {"task_id": task_id, "task": task,
                                                               **failure.record_fields()}))

    def _fail_chord(self, planner: Planner, join: Join, failed: Mapping[str, Any]) -> None:
        """``join``'s chord failed first with part ``failed``: its body and what follows read as ``ChordError``, the
        body's errbacks run, an enclosing chord is told; then the failing is marked done."""
        error = ChordError(f"chord {join.id}: header task {failed.get('task')}[{failed.get('task_id')}] failed: "
                           f"{failed.get('exc_type')}: {failed.get('exc_message')}")
        failure = Failure.of({**self._exception_fields(error), "traceback": failed.get("traceback")})
        body = join.body
        self._store_failed(calls(body), failure)
        for entry, errback in errbacks_of(body):
            self._send(planner, errback, errback_args(entry, failure, join.id), Continuation(), on_error=None)
        first = calls(body)[0]
        self._fail_continuation(planner, join.then, failure, first.task_id or join.id, first.task)
        self._join_backend(join).chord_fired(join.id)
        log.warning("chord failed", chord_id=join.id, failed_task=failed.get("task"),
                    failed_task_id=failed.get("task_id"))

    def _store_failed(self, failed: list[Signature], failure: Failure) -> None:
        if self._backend is None:
            return
        for call in failed:
            assert call.task_id is not None
            self._backend.store(ResultRecord(task_id=call.task_id, state=failure.state, task=call.task,
                                             **failure.record_fields()))

    def _join_backend(self, join: Join) -> ResultBackend:
        if self._backend is None:
            raise ResultError(f"this worker has no result backend, so it cannot join chord {join.id}: start it with "
                              "--result-backend")
        return self._backend
