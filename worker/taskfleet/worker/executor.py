"""Run one delivery: decode, check, execute and store the result, then decide what becomes of the message.

The executor decides, it does not settle: ``Executor.run`` returns an ``Outcome`` whose ``decision`` the child's
``Settler`` (taskfleet.worker.settler) carries out, and makes no ack or dead-letter call itself.

- ``Ack``: the final state (success, failure, revoked) is stored. The ack may wait for the rest of the fetched
  batch: a message whose ack was still pending when its worker died is delivered again and recognised by its stored
  final state, except with ``ignore_result`` (``keeps_results``), where nothing is stored and it runs again. A
  redelivery, a retry's attempt and a workflow's follow-up found already run are the ``DUPLICATE`` outcome, acked
  unrun (taskfleet.worker.duplicates).
- Workflow follow-ups (``taskfleet.worker.followups``: callbacks, errbacks, a chain's next step, a chord's join) are
  sent after the final state is stored and before the decision is returned; a redelivery that finds the final state
  stored sends them again (same task ids) before it is acked.
- ``AckNow``, an ack never deferred: for a retry, once the next attempt is published and the RETRY state stored
  (publish before ack: never lost; with ``ignore_result`` nothing stored would let a redelivery be recognised), and
  for a duplicate.
- A revoked task (its id in ``RuntimeState.revoked``) or an expired one is not run: REVOKED is stored (with a
  workflow's failure follow-ups) and it is acked; a delayed one is checked when it comes due.
- A task over its rate limit (``RuntimeState.limits``, ``RuntimeState.rate_limiter``) is deferred: published again
  for its reserved slot (same task id, not counted as a retry) and acked at once (``AckNow``), so it never holds
  the child's slot while it waits (taskfleet.worker.rate_limiter).
- ``DeadLetter``: bad input (oversized, undecodable, unknown task) or retries used up (its FAILURE stored). Bad
  input never raises out of here: it is dead-lettered with the reason and the worker goes on.
- ``Leave``: a broker or backend error stopped it before its outcome was stored; the message stays in-flight and
  is delivered again when its lease runs out.

The outcome is stored before the decision is returned, so a worker that dies anywhere before the settling leaves
the message in-flight and it is delivered again (at-least-once). The task's hooks and the task signals run around
the run (taskfleet.worker.lifecycle): after the outcome is stored (and its follow-ups sent), before the decision is
returned.
"""

from __future__ import annotations

import inspect
import signal
import time
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

from taskfleet.app import App
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.brokers.base import Delivery
from taskfleet.canvas.workflow import Workflow
from taskfleet.errors import (
    BrokerError,
    DecodeError,
    EncodeError,
    MaxRetriesExceeded,
    ResultError,
    Retry,
    SoftTimeLimitExceeded,
    TaskNotRegistered,
    TimeLimitExceeded,
)
from taskfleet.message import Message
from taskfleet.retry import retry_delay_s
from taskfleet.states import READY_STATES, State
from taskfleet.task import Request, Task
from taskfleet.worker.duplicates import Duplicates, keeps_results
from taskfleet.worker.followups import Failure, FollowUps
from taskfleet.worker.lifecycle import TaskRun, task_run
from taskfleet.worker.logging import get_logger
from taskfleet.worker.outcomes import (
    ACK,
    ACK_NOW,
    DEAD_LETTERED,
    DEFERRED,
    DROPPED,
    DUPLICATE,
    FAILURE,
    RETRY,
    REVOKED,
    SUCCESS,
    Ack,
    AckNow,
    Admitted,
    Begun,
    DeadLetter,
    Decision,
    Leave,
    Outcome,
    Started,
    exception_fields,
)
from taskfleet.worker.rate_gate import Deferral, admit
from taskfleet.worker.runtime_state import RuntimeState

#: The decision types live in taskfleet.worker.outcomes; the settler, the child and the tests import them from here.
__all__ = [
    "ACK",
    "ACK_NOW",
    "DEAD_LETTERED",
    "DEFERRED",
    "DROPPED",
    "DUPLICATE",
    "FAILURE",
    "RETRY",
    "REVOKED",
    "SUCCESS",
    "Ack",
    "AckNow",
    "Admitted",
    "Begun",
    "DeadLetter",
    "Decision",
    "Executor",
    "Leave",
    "Outcome",
    "Started",
    "exception_fields",
    "keeps_results",
]

log = get_logger("taskfleet.worker")


def _raise_soft_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


class Executor:
    """Executes deliveries for one child process and decides what becomes of each message (module docstring).
    ``on_start`` is called just before a task body runs. Retries are published through ``app``. ``runtime``: the
    revoked ids and limits the control commands change (none by default)."""

    def __init__(self, app: App, backend: ResultBackend | None, on_start: Callable[[Started], None], *,
                 runtime: RuntimeState | None = None,
                 run_coroutine: Callable[[Admitted], Outcome] | None = None) -> None:
        self.app = app
        #: Runs an ``async def`` task to its end (the child's event loop, taskfleet.worker.async_runner); None:
        #: called as a sync task (its coroutine is the result).
        self.run_coroutine = run_coroutine
        self.runtime = runtime if runtime is not None else RuntimeState()
        self.backend = backend
        self.on_start = on_start
        self.accept = app.settings.accept_content
        self.max_bytes = app.settings.max_message_bytes
        self.max_decompressed_bytes = app.settings.max_decompressed_bytes
        self.serializer = app.serializer
        self.extended = app.settings.result_extended
        self.followups = FollowUps(app, backend, exception_fields=partial(exception_fields,
                                                                          serialize=app.serializer.dumps))
        self.duplicates = Duplicates(backend, self.followups)
        signal.signal(signal.SIGALRM, _raise_soft_limit)

    def run(self, delivery: Delivery) -> Outcome:
        """Process ``delivery`` to its end and decide what becomes of its message. Nothing raises out of here but
        ``BaseException``s such as ``KeyboardInterrupt``: a broker or backend error is the ``Leave`` decision."""
        began = time.perf_counter()
        try:
            return self._run(delivery, began)
        except (BrokerError, ResultError) as exc:  # BrokerConnectionError is a BrokerError
            return self.left(delivery, exc, began)

    @staticmethod
    def left(delivery: Delivery, exc: BrokerError | ResultError, began: float) -> Outcome:
        """A broker or backend error stopped ``delivery`` before its outcome was stored: ``Leave``."""
        log.warning("could not finish message, it will be redelivered", message_id=delivery.message_id,
                    error=str(exc))
        return Outcome(Leave(str(exc)), DROPPED, "?", time.perf_counter() - began)

    def _run(self, delivery: Delivery, began: float) -> Outcome:
        admitted = self.admit(delivery, began)
        if isinstance(admitted, Outcome):
            return admitted
        if self.run_coroutine is not None and inspect.iscoroutinefunction(admitted.task.fn):
            return self.run_coroutine(admitted)
        return self.execute(admitted)

    def admit(self, delivery: Delivery, began: float) -> Outcome | Admitted:
        """Decode and check ``delivery``: its ``Outcome`` when it is not to run (bad input, a duplicate, revoked,
        expired, deferred), else the ``Admitted`` task to run. Broker and backend errors propagate."""
        if len(delivery.data) > self.max_bytes:
            return self._dead("?", f"oversized message: {len(delivery.data)} bytes > "
                                   f"max_message_bytes={self.max_bytes}", began)
        try:
            msg = Message.decode(delivery.data, accept=self.accept, max_decompressed_bytes=self.max_decompressed_bytes)
        except DecodeError as exc:  # a decompression bomb too: it was not inflated past the limit
            return self._dead("?", str(exc), began)
        try:
            workflow = self.followups.read(msg)
        except DecodeError as exc:  # its caller waits on the task id: the FAILURE says why
            self._store(msg, State.FAILURE, **exception_fields(exc, self.serializer.dumps))
            return self._dead(msg.task, str(exc), began, msg)
        task = self.app.tasks.get(msg.task)
        if task is None:
            error = TaskNotRegistered(f"task {msg.task!r} is not registered in app {self.app.name!r}")
            fields = exception_fields(error, self.serializer.dumps)
            self._store(msg, State.FAILURE, **fields)
            if workflow is not None:
                self.followups.failed(msg, workflow, Failure.of(fields))
            return self._dead(msg.task, str(error), began, msg)
        duplicate = self.duplicates.check(delivery, msg, task, workflow, began)
        if duplicate is not None:
            return duplicate
        if msg.id in self.runtime.revoked:
            return self._revoke(delivery, msg, workflow, "revoked", "revoked", began)
        if msg.is_expired():
            return self._revoke(delivery, msg, workflow, f"expired at {msg.expires} before it started", "expired",
                                began)
        admitted = admit(msg, task.options, self.runtime)
        if isinstance(admitted, Deferral):
            return self._defer(delivery, msg, admitted, began)
        return Admitted(delivery, admitted, task, began, workflow)

    def _revoke(self, delivery: Delivery, msg: Message, workflow: Workflow | None, reason: str, why: str,
                began: float) -> Outcome:
        """Not run: store REVOKED (``reason``), send the workflow's failure follow-ups, ack."""
        self._store(msg, State.REVOKED, exc_message=reason)
        if workflow is not None:
            self.followups.failed(msg, workflow, self.followups.revoked(reason))
        log.info("task revoked", task_id=msg.id, task=msg.task, queue=delivery.queue, reason=why)
        return Outcome(ACK, REVOKED, msg.task, time.perf_counter() - began, task_id=msg.id, detail=why,
                       message=msg)

    def _defer(self, delivery: Delivery, msg: Message, deferral: Deferral, began: float) -> Outcome:
        """Over its rate limit: publish it again for its slot (same id and retries) and ack it at once, so this
        child's slot goes to the next message now."""
        self.app.publish(deferral.message)
        log.debug("task deferred by its rate limit", task_id=msg.id, task=msg.task, queue=delivery.queue,
                  delay_s=round(deferral.delay_s, 3))
        return Outcome(ACK_NOW, DEFERRED, msg.task, time.perf_counter() - began, task_id=msg.id)

    def execute(self, admitted: Admitted) -> Outcome:
        """Run a sync task's body with its soft time limit (SIGALRM), then ``conclude``."""
        begun = self.begin(admitted)
        msg = admitted.message
        try:
            if begun.soft_limit_s:
                signal.setitimer(signal.ITIMER_REAL, begun.soft_limit_s)
            try:
                value = admitted.task.run_with_request(begun.request, msg.args, msg.kwargs)
            except Exception as exc:  # noqa: BLE001 - the task's own failure is data, not a worker error
                return self.conclude(admitted, begun, error=exc)
            finally:
                if begun.soft_limit_s:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            return self.conclude(admitted, begun, value=value)
        finally:
            if begun.run:
                begun.run.postrun()

    def begin(self, admitted: Admitted) -> Begun:
        """What comes before the task body: its request, hooks (``prerun``, ``before_start``), STARTED when tracked,
        ``on_start``, and its time limits now. The caller runs the body, then ``conclude``, then ``run.postrun``."""
        delivery, msg, task = admitted.delivery, admitted.message, admitted.task
        request = Request(
            id=msg.id, task=msg.task, args=msg.args, kwargs=msg.kwargs, retries=msg.retries, queue=msg.queue,
            headers=msg.headers, eta=msg.eta, expires=msg.expires, root_id=msg.root_id or msg.id,
            parent_id=msg.parent_id, delivery_count=delivery.delivery_count, called_directly=False,
        )
        run = task_run(task, request)  # None for a plain task: no hook or signal to call
        if run:
            run.prerun()
        soft_limit_s, hard_limit_s = self.runtime.limits.time_limits(msg.task, task.options)
        if task.options.track_started:
            self._store(msg, State.STARTED)
        self.on_start(Started(delivery.message_id, delivery.queue, msg.id, msg.task, hard_limit_s, msg))
        if run:
            run.before_start()
        return Begun(request, run, soft_limit_s, hard_limit_s)

    def conclude(self, admitted: Admitted, begun: Begun, *, value: Any = None,
                 error: Exception | None = None) -> Outcome:
        """After the task body returned ``value`` or raised ``error``: retry, fail or store the success (with its
        follow-ups and hooks), and decide."""
        delivery, msg, task, began, workflow = admitted
        run = begun.run
        if isinstance(error, Retry):
            return self._retry(delivery, msg, task, error, run, began, workflow)
        if error is not None:
            if task.options.autoretry_for and isinstance(error, task.options.autoretry_for):
                return self._retry(delivery, msg, task, Retry(exc=error), run, began, workflow)
            return self._fail(delivery, msg, error, run, began, workflow)
        runtime = time.perf_counter() - began
        try:
            self._store(msg, State.SUCCESS, result=value)
        except EncodeError as exc:
            return self._fail(delivery, msg, exc, run, began, workflow)
        if workflow is not None:
            self.followups.succeeded(msg, workflow, value)
        if run:
            run.succeeded(value)
        log.info("task succeeded", task_id=msg.id, task=msg.task, queue=delivery.queue,
                 runtime_ms=round(runtime * 1000, 3))
        return Outcome(ACK, SUCCESS, msg.task, runtime, task_id=msg.id, result=value, message=msg)

    def terminated(self, admitted: Admitted) -> Outcome:
        """A running coroutine cancelled by a revoke with terminate: REVOKED, the workflow's failure follow-ups, ack
        (as the supervisor settles a terminated sync task)."""
        delivery, msg, _, began, workflow = admitted
        return self._revoke(delivery, msg, workflow, "terminated by a revoke", "terminated", began)

    def _retry(self, delivery: Delivery, msg: Message, task: Task[Any], reason: Retry, run: TaskRun | None,
               began: float, workflow: Workflow | None) -> Outcome:
        opts, exc = task.options, reason.exc
        limit = opts.max_retries if reason.max_retries is None else reason.max_retries
        if limit is not None and msg.retries >= limit:
            error = exc if exc is not None else MaxRetriesExceeded(f"{msg.task} used up its {limit} retries")
            self._finish_failed(msg, error, run, workflow)
            reason_text = f"max retries ({limit}) exceeded: {type(error).__name__}: {error}"
            return self._dead(msg.task, reason_text, began, msg)
        countdown_s = reason.countdown_s
        if countdown_s is None:
            countdown_s = retry_delay_s(retries=msg.retries, backoff=opts.retry_backoff,
                                        backoff_max_s=opts.retry_backoff_max, jitter=opts.retry_jitter,
                                        default_delay_s=opts.default_retry_delay)
        again = msg.replace(retries=msg.retries + 1, eta=time.time() + countdown_s)
        self.app.publish(again)  # the new attempt is stored before the old one is acked: never lost
        fields = exception_fields(exc, self.serializer.dumps) if exc is not None else {}
        self._store(msg, State.RETRY, retries=again.retries, **fields)
        if run:
            run.retried(reason, fields.get("traceback"))
        log.info("task retry", task_id=msg.id, task=msg.task, queue=delivery.queue, retries=again.retries,
                 countdown_s=round(countdown_s, 3), error=repr(exc))
        # Acked at once, never deferred: with ignore_result a redelivery could not tell this attempt already ran.
        return Outcome(ACK_NOW, RETRY, msg.task, time.perf_counter() - began, task_id=msg.id, error=exc,
                       message=msg)

    def _fail(self, delivery: Delivery, msg: Message, exc: BaseException, run: TaskRun | None,
              began: float, workflow: Workflow | None) -> Outcome:
        self._finish_failed(msg, exc, run, workflow)
        log.warning("task failed", task_id=msg.id, task=msg.task, queue=delivery.queue,
                    error=f"{type(exc).__name__}: {exc}", runtime_ms=round((time.perf_counter() - began) * 1000, 3))
        return Outcome(ACK, FAILURE, msg.task, time.perf_counter() - began, task_id=msg.id, error=exc, message=msg)

    def _finish_failed(self, msg: Message, exc: BaseException, run: TaskRun | None,
                       workflow: Workflow | None) -> None:
        """A final failure with ``exc``: store FAILURE, send the workflow's failure follow-ups, run the hooks."""
        fields = exception_fields(exc, self.serializer.dumps)
        self._store(msg, State.FAILURE, **fields)
        if workflow is not None:
            self.followups.failed(msg, workflow, Failure.of(fields))
        if run:
            run.failed(exc, fields["traceback"])

    def follow_up_timed_out(self, delivery: Delivery) -> None:
        """Send the failure follow-ups of ``delivery``'s workflow, if it has one, after its task ran past its hard
        time limit (the supervisor stored the FAILURE and is about to kill this child; called from the child's
        background thread while the task is stuck). A follow-up that cannot be sent now is sent by the redelivery
        when this message's ack is lost with the child."""
        try:
            msg = Message.decode(delivery.data, accept=self.accept,
                                 max_decompressed_bytes=self.max_decompressed_bytes)
            workflow = self.followups.read(msg)
        except DecodeError:
            return
        if workflow is None:
            return
        try:
            record = self.backend.get(msg.id) if self.backend is not None else None
            if record is not None and record.state in READY_STATES:
                self.followups.redo(msg, workflow, record)
            else:  # ignore_result: nothing stored
                error = TimeLimitExceeded(f"{msg.task} exceeded its time limit; its child was killed")
                self.followups.failed(msg, workflow, Failure.of(exception_fields(error, self.serializer.dumps)))
        except (BrokerError, ResultError) as exc:
            log.warning("could not send the follow-ups of a timed-out task", task_id=msg.id, error=str(exc))

    @staticmethod
    def _dead(task: str, reason: str, began: float, message: Message | None = None) -> Outcome:
        # Logged by the Settler once the message is moved.
        return Outcome(DeadLetter(reason), DEAD_LETTERED, task, time.perf_counter() - began,
                       task_id=message.id if message is not None else None, message=message)

    def _store(self, msg: Message, state: State, **fields: Any) -> None:
        """Store a result record, unless there is no backend or the task ignores results (``keeps_results``); with
        ``result_extended`` it carries the task's arguments and queue."""
        if self.backend is None or not keeps_results(self.app.tasks.get(msg.task)):
            return
        fields.setdefault("retries", msg.retries)
        if self.extended:
            fields["extended"] = {"args": list(msg.args), "kwargs": dict(msg.kwargs), "queue": msg.queue}
        self.backend.store(ResultRecord(task_id=msg.id, state=state, task=msg.task, **fields))
