"""A worker child's task events (``taskfleet worker -E``): received, started, and how each task ended.

The child's main thread only collects: ``started`` and ``finished`` encode their events from what the executor
hands over (``Started``, ``Outcome``: references, among them the message it decoded, so the executor builds nothing
for events and nothing is decoded twice; the events every task has are formatted directly, see below). The child's
background thread sends what has been collected with ONE ``FleetStore.emit_events`` call every
``EVENTS_FLUSH_S`` (``taskfleet.worker.child_thread``, 250 ms; none when there is nothing to send), through an
``EventSink``: its own fleet store, opened there after fork, used by that one thread only, failures logged and
dropped. So a batch of fetched tasks costs a few list appends on the hot path and one broker call beside it, and a
child started without ``-E`` has no ``TaskEvents`` at all (one ``is None`` check per hook).

Events (names and fields: ``taskfleet.fleet.events``):

- ``task-received``: the child took the task up (the message decoded), with its arguments (``repr``, cut),
  retries, eta, expiry and workflow ids; just before ``task-started``, or before the end event of a task that did
  not start (expired, unknown). Not at fetch time: a prefetched message given back unstarted (a long task in its
  child) is received once, by the child that runs it. None for bytes that do not decode (their
  ``task-dead-lettered`` says why).
- ``task-started``: the task body is about to run.
- the end, from the ``Outcome``: ``task-succeeded`` (``runtime`` in seconds, ``result`` ``repr``),
  ``task-failed`` (``exception``, ``traceback``), ``task-retried`` (``exception``), ``task-revoked`` (``reason``:
  ``expired`` or ``revoked``), ``task-dead-lettered`` (``reason``; unknown task, bad input, retries used up). A
  redelivery found already finished, or a message left to be delivered again, emits no end event.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from taskfleet.brokers.base import Delivery
from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.errors import TimeLimitExceeded
from taskfleet.fleet.event_sink import EventSink
from taskfleet.fleet.events import FleetEvent, short_repr
from taskfleet.message import Message
from taskfleet.worker.executor import (
    ACK,
    DEAD_LETTERED,
    FAILURE,
    RETRY,
    REVOKED,
    SUCCESS,
    DeadLetter,
    Outcome,
    Started,
)
from taskfleet.worker.progress import RunningTask

if TYPE_CHECKING:
    from taskfleet.app import App

#: Events a child keeps while none can be sent (the oldest are dropped beyond it): memory stays bounded when the
#: broker is slow or gone.
MAX_PENDING = 10_000
#: A failed task's traceback is cut to its last this many characters (where the error is).
TRACEBACK_MAX = 8192


def exception_text(exc: BaseException | None) -> str | None:
    """``Type: message`` (Celery's ``exception`` field), or None."""
    return None if exc is None else _cut(f"{type(exc).__name__}: {exc}")


def _cut(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def received_event(message: Message, *, queue: str, worker: str, timestamp: float) -> FleetEvent:
    """``task-received`` of ``message``, taken up by a child (an ``eta``, ``expires`` or ``parent_id`` only when it
    has one: most tasks have none, and every byte of every event is stored)."""
    fields: dict[str, Any] = {
        "uuid": message.id, "name": message.task, "queue": queue, "worker": worker,
        "args": short_repr(tuple(message.args)), "kwargs": short_repr(dict(message.kwargs)),
        "retries": message.retries, "root_id": message.root_id or message.id,
    }
    for key, value in (("eta", message.eta), ("expires", message.expires), ("parent_id", message.parent_id)):
        if value is not None:
            fields[key] = value
    return FleetEvent("task-received", timestamp, fields)


def started_event(started: Started, *, worker: str, timestamp: float) -> FleetEvent:
    """``task-started``: the executor is about to run the task's body."""
    return FleetEvent("task-started", timestamp, {"uuid": started.task_id, "name": started.task,
                                                  "queue": started.queue, "worker": worker})


def end_event(delivery: Delivery, outcome: Outcome, *, worker: str, timestamp: float) -> FleetEvent | None:
    """The event of how ``outcome`` ended ``delivery``'s task, or None for an end that is not a task's (a
    duplicate acked unrun, a message left to be delivered again)."""
    fields: dict[str, Any] = {"uuid": outcome.task_id or delivery.message_id, "name": outcome.task,
                              "queue": delivery.queue, "worker": worker}
    kind = outcome.outcome
    if kind == SUCCESS:
        fields["runtime"] = outcome.runtime_s
        fields["result"] = short_repr(outcome.result)
        return FleetEvent("task-succeeded", timestamp, fields)
    if kind == FAILURE:
        fields["exception"] = exception_text(outcome.error)
        fields["traceback"] = _traceback(outcome.error)
        fields["runtime"] = outcome.runtime_s
        return FleetEvent("task-failed", timestamp, fields)
    if kind == RETRY:
        fields["exception"] = exception_text(outcome.error)
        return FleetEvent("task-retried", timestamp, fields)
    if kind == REVOKED:
        fields["reason"] = outcome.detail or "revoked"
        fields["expired"] = outcome.detail == "expired"
        fields["terminated"] = outcome.detail == "terminated"
        return FleetEvent("task-revoked", timestamp, fields)
    if kind == DEAD_LETTERED:
        decision = outcome.decision
        fields["reason"] = decision.reason if isinstance(decision, DeadLetter) else None
        if outcome.error is not None:
            fields["exception"] = exception_text(outcome.error)
        return FleetEvent("task-dead-lettered", timestamp, fields)
    return None


# -- the hot path's encodings ------------------------------------------------------------------------------------------
# A no-op task runs in well under 100 us; building its three events with dicts and ``json`` cost half as much again.
# So the events every task has (received, started, succeeded) are formatted here directly, with the JSON of the
# fields they share (task id, name, queue, worker) made once per task. They decode to exactly what the builders
# above give (a unit test holds them equal); the rare ends (failed, retried, revoked, dead-lettered) use the builders.

_str = json.encoder.encode_basestring_ascii  # the C escaper behind json.dumps: a Python str as a JSON string


def _optional(name: str, value: float | str | None) -> str:
    """``,"name":value``, or nothing for None (as ``received_event`` leaves it out)."""
    if value is None:
        return ""
    return f',"{name}":{_str(value) if isinstance(value, str) else repr(value)}'


def shared_json(task_id: str, name: str, queue: str, worker: str) -> str:
    """The fields every event of one task has, as JSON object members (no braces)."""
    return f'"uuid":{_str(task_id)},"name":{_str(name)},"queue":{_str(queue)},"worker":{_str(worker)}'


def received_json(message: Message, *, shared: str, timestamp: float) -> bytes:
    """``received_event(...).to_json()``, formatted directly."""
    return (f'{{"type":"task-received","timestamp":{timestamp!r},{shared},'
            f'"args":{_str(short_repr(tuple(message.args)))},"kwargs":{_str(short_repr(dict(message.kwargs)))},'
            f'"retries":{int(message.retries)},"root_id":{_str(message.root_id or message.id)}'
            f'{_optional("eta", message.eta)}{_optional("expires", message.expires)}'
            f'{_optional("parent_id", message.parent_id)}}}').encode()


def started_json(*, shared: str, timestamp: float) -> bytes:
    """``started_event(...).to_json()``, formatted directly."""
    return f'{{"type":"task-started","timestamp":{timestamp!r},{shared}}}'.encode()


def succeeded_json(outcome: Outcome, *, shared: str, timestamp: float) -> bytes:
    """``end_event(...).to_json()`` of a success, formatted directly."""
    return (f'{{"type":"task-succeeded","timestamp":{timestamp!r},{shared},"runtime":{float(outcome.runtime_s)!r},'
            f'"result":{_str(short_repr(outcome.result))}}}').encode()


def _traceback(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= TRACEBACK_MAX else "..." + text[-(TRACEBACK_MAX - 3):]


class TaskEvents:
    """Collects one child's task events and sends them in batches through ``sink`` (module docstring).

    ``started`` and ``finished`` are called by the thread that runs tasks; ``flush`` from one thread at a time (the
    background thread while the child runs, then the main thread once that thread has stopped). A hook never
    raises: an event it cannot build is counted dropped and logged by the sink."""

    def __init__(self, sink: EventSink, *, worker: str, max_pending: int = MAX_PENDING) -> None:
        self.sink = sink
        self.worker = worker
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        #: The message of the last ``task-started`` (its ``task-received`` is sent) and its shared fields' JSON.
        self._started: Message | None = None
        self._shared = ""

    @classmethod
    def for_app(cls, app: App, *, worker: str) -> TaskEvents:
        """The task events of a child of ``app``'s worker ``worker`` (its id), to the app's event stream on the
        child's broker (opened on the first flush, in the process and thread that flushes)."""
        events_max_len = app.settings.events_max_len
        return cls(EventSink(lambda: connect_fleet_store(app.broker, namespace=app.name,
                                                         events_max_len=events_max_len)), worker=worker)

    # -- collecting (the main thread's hooks) -----------------------------------------------------------------------

    def started(self, started: Started) -> None:
        """The task of ``started`` is about to run: its ``task-received`` and ``task-started``."""
        try:
            now = time.time()
            shared = self._shared = shared_json(started.task_id, started.task, started.queue, self.worker)
            message = self._started = started.message
            begun = started_json(shared=shared, timestamp=now)
            if message is None:
                self._add([begun])
            else:
                self._add([received_json(message, shared=shared, timestamp=now), begun])
        except Exception as exc:  # noqa: BLE001 - events never stop a task
            self.sink.drop(2, exc)

    def finished(self, delivery: Delivery, outcome: Outcome) -> None:
        """``delivery`` ended with ``outcome``: its end event, after its ``task-received`` if it never started. The
        fields (repr, traceback) are taken now, in the thread that ran the task, since the objects they come from
        may change once the next task runs."""
        started, self._started = self._started, None
        try:
            now = time.time()
            message = outcome.message
            ran = message is not None and message is started
            if ran and outcome.outcome == SUCCESS:
                self._add([succeeded_json(outcome, shared=self._shared, timestamp=now)])
                return
            event = end_event(delivery, outcome, worker=self.worker, timestamp=now)
            if event is None:
                return
            if message is None or ran:
                self._add([event.to_json()])
            else:
                received = received_event(message, queue=delivery.queue, worker=self.worker, timestamp=now)
                self._add([received.to_json(), event.to_json()])
        except Exception as exc:  # noqa: BLE001 - events never stop a task
            self.sink.drop(1, exc)

    def killed(self, delivery: Delivery, running: RunningTask, *, terminated: bool) -> None:
        """The running task is being killed by the supervisor, which stored its final state: revoked with
        terminate (``task-revoked``, ``terminated``), or past its hard time limit (``task-failed`` with
        ``TimeLimitExceeded``). Sent at once, from the background thread, since the child dies next."""
        runtime_s = max(0.0, time.time() - running.since)
        if terminated:
            outcome = Outcome(ACK, REVOKED, running.task, runtime_s, task_id=running.task_id, detail="terminated")
        else:
            error = TimeLimitExceeded(f"{running.task} exceeded its time limit; its child was killed")
            outcome = Outcome(ACK, FAILURE, running.task, runtime_s, task_id=running.task_id, error=error)
        self.finished(delivery, outcome)
        self.flush()

    def _add(self, items: list[bytes]) -> None:
        with self._lock:
            self._pending.extend(items)
            excess = len(self._pending) - self._max_pending
            if excess > 0:
                del self._pending[:excess]
        if excess > 0:
            self.sink.drop(excess, None)

    # -- sending ----------------------------------------------------------------------------------------------------

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> None:
        """Send everything collected so far in one ``emit_events`` call (nothing when there is nothing)."""
        with self._lock:
            if not self._pending:
                return
            items, self._pending = self._pending, []
        self.sink.emit(items)

    def close(self) -> None:
        """Send what is left and close the store (the child is exiting)."""
        self.flush()
        self.sink.close()
