"""Whether a delivery's attempt already ran, so that it is acked without running again (the ``DUPLICATE`` outcome).

An attempt can arrive again after it ran: a redelivery whose ack was lost (the worker died with it pending, a broker
restart), or a second copy of a worker's own publish (a retry's next attempt or a workflow's follow-up sent again
after a lost confirm). Those three are checked with one read of the result backend; a first attempt pays nothing.
The attempt already ran when its final state is stored, or when a stored RETRY names a later attempt (it failed
and was retried). A copy found so is acked at once (``AckNow``): a deferred ack would leave it to be delivered, and
counted, again each time a poison message later in its batch kills the child, until it is dead-lettered. A
redelivered workflow step sends its follow-ups again first (same task ids): they may not all have been sent.

Nothing is stored for a task registered with ``ignore_result=True`` (``keeps_results``), so its copies cannot be
recognised and run again.
"""

from __future__ import annotations

import time
from typing import Any

from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.brokers.base import Delivery
from taskfleet.canvas.workflow import Workflow
from taskfleet.message import Message
from taskfleet.states import READY_STATES
from taskfleet.task import Task
from taskfleet.worker.followups import FollowUps
from taskfleet.worker.logging import get_logger
from taskfleet.worker.outcomes import ACK_NOW, DUPLICATE, Outcome

log = get_logger("taskfleet.worker")


def keeps_results(task: Task[Any] | None) -> bool:
    """The ``ignore_result`` rule, the one place it is applied: nothing is stored for a task registered with
    ``ignore_result=True`` (no STARTED, RETRY or final state, nor a hard time limit's FAILURE), so a redelivery of
    it cannot be recognised as finished. An unregistered task (``None``) has its FAILURE stored."""
    return task is None or not task.options.ignore_result


class Duplicates:
    """Recognises an attempt that already ran, from what ``backend`` holds (module notes); ``followups`` sends a
    redelivered workflow step's follow-ups again."""

    def __init__(self, backend: ResultBackend | None, followups: FollowUps) -> None:
        self.backend = backend
        self.followups = followups

    def check(self, delivery: Delivery, msg: Message, task: Task[Any], workflow: Workflow | None,
              began: float) -> Outcome | None:
        """The ``DUPLICATE`` outcome when this attempt already ran, else None (to be run). Reads the backend for
        redeliveries, retries and workflow follow-ups only."""
        if not (delivery.redelivered or msg.retries or (workflow is not None and workflow.follow_up)):
            return None
        record = self._stored_record(msg, task)
        if record is None:
            return None
        if record.state in READY_STATES:
            if workflow is not None and delivery.redelivered:
                self.followups.redo(msg, workflow, record)
            log.info("task already finished: acked without running it again", task_id=msg.id, task=msg.task,
                     queue=delivery.queue, delivery_count=delivery.delivery_count)
        elif record.retries > msg.retries:
            log.info("task attempt already retried: acked without running it again", task_id=msg.id, task=msg.task,
                     queue=delivery.queue, retries=msg.retries, delivery_count=delivery.delivery_count)
        else:
            return None
        return Outcome(ACK_NOW, DUPLICATE, msg.task, time.perf_counter() - began, task_id=msg.id, message=msg)

    def _stored_record(self, msg: Message, task: Task[Any]) -> ResultRecord | None:
        """What the result backend already holds for this task id, if anything (None without a backend, or for a
        task that keeps no results)."""
        if self.backend is None or not keeps_results(task):
            return None
        return self.backend.get(msg.id)
