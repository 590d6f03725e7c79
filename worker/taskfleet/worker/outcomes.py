"""What the executor decides for a delivery (taskfleet.worker.executor): the ``Outcome`` and its decision for the
settler (``Ack``, ``AckNow``, ``DeadLetter``, ``Leave``), the metrics outcome names, and the steps of a run
(``Admitted``, ``Begun``, ``Started``) that the sync path and the async one (taskfleet.worker.async_execution) share,
and the result-record fields of an exception (``exception_fields``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from taskfleet.brokers.base import Delivery
from taskfleet.canvas.workflow import Workflow
from taskfleet.message import Message
from taskfleet.task import Request, Task
from taskfleet.worker.lifecycle import TaskRun

SUCCESS = "success"
FAILURE = "failure"
RETRY = "retry"
REVOKED = "revoked"
DEFERRED = "deferred"  # over its rate limit: published again for its slot
DEAD_LETTERED = "dead_lettered"
DUPLICATE = "duplicate"
DROPPED = "dropped"  # left to be delivered again: not a metrics outcome


@dataclass(frozen=True, slots=True)
class Started:
    """What the supervisor needs to enforce a hard time limit on a running task."""

    message_id: str
    queue: str
    task_id: str
    task: str
    time_limit_s: float | None
    #: The decoded message (a reference, for its ``task-received`` event: taskfleet.worker.task_events).
    message: Message | None = None


class Admitted(NamedTuple):
    """A delivery checked and ready to run: its decoded message, its task and workflow, and when it began
    (``time.perf_counter``)."""

    delivery: Delivery
    message: Message
    task: Task[Any]
    began: float
    workflow: Workflow | None


class Begun(NamedTuple):
    """A task whose body is about to run (``Executor.begin``): its request, hooks, and time limits in seconds."""

    request: Request
    run: TaskRun | None
    soft_limit_s: float | None
    hard_limit_s: float | None


@dataclass(frozen=True, slots=True)
class Ack:
    """Ack: the final state is stored. The ack may be batched."""


@dataclass(frozen=True, slots=True)
class AckNow:
    """Ack at once, never deferred: a retry or a deferral (its next message is published), or a redelivery found
    already run (a duplicate). A batched ack would leave it to be delivered again, and counted, should the child die
    before the batch ends (say, killed by the next message of the batch)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Move the message to the dead-letter list with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Leave:
    """Settle nothing: the message could not be finished (``error``) and is delivered again when its lease runs
    out."""

    error: str


Decision = Ack | AckNow | DeadLetter | Leave
ACK = Ack()
ACK_NOW = AckNow()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one delivery: what must become of its message, and its metrics (outcome, task name, runtime).
    The rest is what a task event tells (taskfleet.worker.task_events), kept as references so that nothing is
    built when events are off: the task id (None when the message did not decode), the task's return value, the
    exception it failed or retried with, for a revoked task why (``expired``, ``revoked``), and the decoded
    message (None when it did not decode)."""

    decision: Decision
    outcome: str
    task: str
    runtime_s: float
    task_id: str | None = None
    result: Any = None
    error: BaseException | None = None
    detail: str | None = None
    message: Message | None = None


def exception_fields(exc: BaseException, serialize: Callable[[Any], bytes]) -> dict[str, Any]:
    """The result-record fields that describe ``exc`` (args kept only when they serialize)."""
    exc_type = type(exc)
    try:
        args: list[Any] | None = list(exc.args)
        serialize(args)
    except Exception:  # noqa: BLE001 - unserializable args: rebuild from the message instead
        args = None
    return {
        "exc_type": f"{exc_type.__module__}.{exc_type.__qualname__}",
        "exc_message": str(exc),
        "exc_args": args,
        "traceback": "".join(traceback.format_exception(exc)),
    }


class FirstCoroutine(Exception):
    """Raised through the executor by a sync child's ``run_coroutine`` (taskfleet.worker.child): it meets its
    first ``async def`` task, ``admitted``, and switches to the async loop to run it."""

    def __init__(self, admitted: Admitted) -> None:
        super().__init__(admitted.message.task)
        self.admitted = admitted
