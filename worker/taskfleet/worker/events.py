"""The events a worker child sends its supervisor over their pipe, the one command the supervisor sends back, and
the ``Reporter`` that sends them.

Reporting costs the supervisor a wake-up per event, so the hot path sends one ``Fetched`` per fetched batch and one
``Done`` per ack batch, never one event per message. A child names its deliveries by sequence number (see
taskfleet.worker.holdings.Held): 1, 2, 3... in the order it fetched them.

Child → supervisor: ``Ready`` once, ``Fetched`` per batch (a fetch's, or what the background thread took from the
broker's buffer while a task ran), ``Done`` per ack batch (with the metrics samples),
``Released`` and ``Dropped`` when deliveries leave without an ack, ``Started`` and ``Finished`` around a task with a
hard time limit only, ``Settled`` after the ``Settle`` command, ``Beat`` every second and ``Exiting`` last.
Supervisor → child: ``Settle``; and the control commands' changes: ``Revoke`` (new revoked ids), ``Terminate``
(the running task was revoked with terminate), ``CancelTasks`` (task ids revoked with terminate: a coroutine
running one is cancelled), ``Limits`` (the runtime rate and time limits) and ``Consume`` (the queues to fetch from).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection

from taskfleet.worker.task_limits import LimitOverrides

#: A metrics sample of one finished task: (task name, queue, outcome, runtime in seconds).
Sample = tuple[str, str, str, float]
#: One fetched delivery as the supervisor tracks it: (sequence number, queue, message id, delivery count).
FetchedItem = tuple[int, str, str, int]


@dataclass(frozen=True, slots=True)
class Ready:
    """The child is up (its broker connection is made)."""

    pid: int


@dataclass(frozen=True, slots=True)
class Fetched:
    """The child leased these deliveries (fetched, or taken from its connection's buffer); the supervisor holds them
    until they are done, released or dropped."""

    items: list[FetchedItem]


@dataclass(frozen=True, slots=True)
class Done:
    """These deliveries are settled (acked, retried or dead-lettered); ``samples`` are their metrics."""

    seqs: list[int]
    samples: list[Sample]


@dataclass(frozen=True, slots=True)
class Released:
    """These unstarted deliveries were taken back to be given back to the broker (sent before they are)."""

    seqs: list[int]


@dataclass(frozen=True, slots=True)
class Dropped:
    """These deliveries could not be finished and are left to be delivered again when their lease runs out (sent
    before ``Progress`` counts them finished, since the supervisor acks the finished deliveries of a child that
    dies)."""

    seqs: list[int]


@dataclass(frozen=True, slots=True)
class Started:
    """A task with a hard time limit started (only those are reported as they start)."""

    seq: int
    message_id: str
    queue: str
    task_id: str
    task: str
    time_limit_s: float


@dataclass(frozen=True, slots=True)
class Finished:
    """The task reported by ``Started`` ended."""

    seq: int


@dataclass(frozen=True, slots=True)
class Settled:
    """The child acked its timed-out delivery ``seq`` on the supervisor's ``Settle`` command."""

    seq: int


@dataclass(frozen=True, slots=True)
class Beat:
    """The child's heartbeat, every second."""


@dataclass(frozen=True, slots=True)
class Exiting:
    """The child's last event: why its loop ended ("stopped", "max_tasks", "max_memory")."""

    reason: str


@dataclass(frozen=True, slots=True)
class Settle:
    """Supervisor → child: delivery ``seq`` is past its hard time limit and its FAILURE is stored; ack it from the
    child's background thread (only the connection that received it may settle it) and answer ``Settled``."""

    seq: int


@dataclass(frozen=True, slots=True)
class Revoke:
    """Supervisor → child: these task ids are revoked until their expiry (Unix seconds): never run them."""

    items: list[tuple[str, float]]


@dataclass(frozen=True, slots=True)
class CancelTasks:
    """Supervisor → child: these task ids were revoked with terminate; a child running one as a coroutine cancels
    it (its REVOKED stored, its delivery acked, the child lives on). A sync task gets ``Terminate`` instead."""

    task_ids: list[str]


@dataclass(frozen=True, slots=True)
class Terminate:
    """Supervisor → child: the running delivery ``seq`` was revoked with terminate and its REVOKED state is stored;
    ack it as ``Settle`` does, then end at the signal that follows (the task is not finished)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Limits:
    """Supervisor → child: the runtime overrides of task rate and time limits, whole."""

    overrides: LimitOverrides


@dataclass(frozen=True, slots=True)
class Consume:
    """Supervisor → child: fetch from these queues from the next fetch on."""

    queues: tuple[str, ...]


Event = Ready | Fetched | Done | Released | Dropped | Started | Finished | Settled | Beat | Exiting
Command = Settle | Revoke | Terminate | CancelTasks | Limits | Consume

BEAT = Beat()


class Reporter:
    """Sends events to the supervisor over the child's pipe; safe to use from two threads."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, event: Event) -> None:
        # A broken pipe means the supervisor is gone; the orphan check ends this process.
        with self._lock, contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(event)
