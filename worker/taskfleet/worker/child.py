"""A worker child process: fetch a batch, run it message by message, ack it in batches, report to the supervisor.

Reporting costs the supervisor a wake-up per message, so it is batched too: per fetched batch one ``fetched`` event
and, per ack batch, one ``done`` event with the metrics samples. Which of its deliveries is running and which are
finished lives in ``Progress``, memory shared with the supervisor, which reads it when the child dies to settle each
delivery correctly. Only a task with a hard time limit is reported as it starts and ends, since the supervisor
enforces that limit.

Acks of finished deliveries wait until the fetched batch is done (before the next fetch), or ``ACK_DELAY_MAX_S`` at
most (the background thread sends them while a slow task runs), and always go out before the child exits. A child
that dies with acks pending has them sent by the supervisor (on brokers that settle from any connection, Redis and
SQLite); otherwise the messages are delivered again and recognised by their stored final state.

A background thread renews the leases of everything the child holds (so a healthy long task is never delivered
twice), sends overdue acks, gives unstarted prefetched messages back when one task runs long, sends heartbeats, and
exits the process if the supervisor is gone.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from taskfleet.app import App
from taskfleet.brokers.base import Broker, Delivery
from taskfleet.errors import BrokerConnectionError, BrokerError, ResultError
from taskfleet.worker.executor import Executor, Started
from taskfleet.worker.logging import get_logger
from taskfleet.worker.settings import WorkerSettings

log = get_logger("taskfleet.worker")

HEARTBEAT_INTERVAL_S = 1.0
#: A finished delivery's ack waits at most about this long (plus one background tick) for the rest of its batch: a
#: slow task after fast ones does not hold their acks back.
ACK_DELAY_MAX_S = 0.05
_TICK_S = 0.05

_MARK = struct.Struct("q")  # one sequence number in Progress

#: A metrics sample of one finished task: (task name, queue, outcome, runtime in seconds).
Sample = tuple[str, str, str, float]


@dataclass(frozen=True, slots=True)
class Held:
    """A delivery in a child, with its sequence number: 1, 2, 3... in the order the child fetched them. Events and
    ``Progress`` name deliveries by it (a message id may come back to the same child)."""

    seq: int
    delivery: Delivery


class Progress:
    """How far a child got through its deliveries, in memory shared with the supervisor (made before the fork).

    Two sequence numbers, each written only by the child's main thread and only upwards: the last delivery started
    and the last one finished (its outcome stored, or given up on and reported as dropped). Deliveries run in
    sequence order, so when the child dies the supervisor reads from these which of the deliveries it still holds
    were finished (their acks may be pending), which one was running and which never started.
    """

    def __init__(self) -> None:
        # Anonymous mmap memory is shared (MAP_SHARED) with the processes forked after it is made; a page, no
        # imports (ctypes would cost every worker process about 0.4 MiB).
        self._marks = mmap.mmap(-1, 2 * _MARK.size)

    @property
    def started(self) -> int:
        return int(_MARK.unpack_from(self._marks, 0)[0])

    @property
    def finished(self) -> int:
        return int(_MARK.unpack_from(self._marks, _MARK.size)[0])

    def start(self, seq: int) -> None:
        _MARK.pack_into(self._marks, 0, seq)

    def finish(self, seq: int) -> None:
        _MARK.pack_into(self._marks, _MARK.size, seq)

    def running(self) -> int | None:
        """The sequence number of the delivery running now, if any."""
        started = self.started
        return started if started > self.finished else None


class Holdings:
    """The deliveries a child holds: the one running and the prefetched ones waiting. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[Held] = deque()
        self._running: Held | None = None
        self._running_since = 0.0
        self._last_seq = 0

    def add(self, batch: Sequence[Delivery]) -> list[Held]:
        """Hold ``batch`` after the deliveries already waiting; returns them numbered."""
        with self._lock:
            held = [Held(self._last_seq + i, d) for i, d in enumerate(batch, start=1)]
            self._last_seq += len(held)
            self._waiting.extend(held)
            return held

    def start_next(self) -> Held | None:
        with self._lock:
            self._running = self._waiting.popleft() if self._waiting else None
            self._running_since = time.monotonic()
            return self._running

    def finish(self) -> None:
        with self._lock:
            self._running = None

    def running(self) -> Held | None:
        with self._lock:
            return self._running

    def all(self) -> list[Delivery]:
        with self._lock:
            return [h.delivery for h in (*self._waiting, *([self._running] if self._running else []))]

    def take_waiting(self, *, if_running_longer_than_s: float | None = None,
                     on_taken: Callable[[list[Held]], None] | None = None) -> list[Held]:
        """Remove and return the unstarted deliveries (only when a task has run that long, if given). ``on_taken``
        is called with them, if any, before anything else may change the holdings."""
        with self._lock:
            if if_running_longer_than_s is not None and (
                self._running is None or time.monotonic() - self._running_since < if_running_longer_than_s
            ):
                return []
            taken = list(self._waiting)
            self._waiting.clear()
            if taken and on_taken is not None:
                on_taken(taken)
            return taken


class Settlements:
    """Finished deliveries whose acks and reports are sent in batches. Thread-safe: the main thread adds and sends
    them, the background thread sends them when they are overdue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acks: list[Delivery] = []
        self._seqs: list[int] = []
        self._samples: list[Sample] = []
        self._since: float | None = None  # when the oldest unsent one finished

    def ack_later(self, delivery: Delivery) -> None:
        """Ack ``delivery`` with the next batch (its outcome is stored)."""
        with self._lock:
            self._acks.append(delivery)

    def finished(self, seq: int, sample: Sample | None) -> None:
        """Report delivery ``seq`` as settled with the next batch, with its metrics sample if it has one."""
        with self._lock:
            self._seqs.append(seq)
            if sample is not None:
                self._samples.append(sample)
            if self._since is None:
                self._since = time.monotonic()

    def unacked(self) -> list[Delivery]:
        with self._lock:
            return list(self._acks)

    def overdue(self, max_age_s: float) -> bool:
        with self._lock:
            return self._since is not None and time.monotonic() - self._since >= max_age_s

    def take(self) -> tuple[list[Delivery], list[int], list[Sample]]:
        """Remove and return everything unsent: the deliveries to ack, the sequence numbers and samples to
        report."""
        with self._lock:
            taken = self._acks, self._seqs, self._samples
            self._acks, self._seqs, self._samples, self._since = [], [], [], None
            return taken


class Reporter:
    """Sends events to the supervisor over the child's pipe; safe to use from two threads."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, *event: Any) -> None:
        # A broken pipe means the supervisor is gone; the orphan check ends this process.
        with self._lock, contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(event)


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; falls back to peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Child:
    """The loop of one child process. ``run`` returns the exit reason."""

    def __init__(self, app: App, settings: WorkerSettings, conn: Connection, index: int,
                 progress: Progress | None = None) -> None:
        self.app = app
        self.settings = settings
        self.index = index
        self.conn = conn
        self.reporter = Reporter(conn)
        self.holdings = Holdings()
        self.settlements = Settlements()
        self.progress = progress if progress is not None else Progress()
        self.stopping = False
        self.parent_pid = os.getppid()
        self._thread_stop = threading.Event()
        self._start_reported = False

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> str:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
        broker = self.app.broker
        executor = Executor(self.app, broker, self.app.backend, on_start=self._on_start,
                            ack=self.settlements.ack_later)
        thread = threading.Thread(target=self._background, args=(broker,), name="taskfleet-lease", daemon=True)
        thread.start()
        self.reporter.send("ready", os.getpid())
        reason = "stopped"
        try:
            reason = self._loop(broker, executor)
        finally:
            self._thread_stop.set()
            thread.join(timeout=5)
            self._send_settlements(broker)
            self._give_back(broker, self.holdings.take_waiting(on_taken=self._report_released))
            self.reporter.send("exiting", reason)
            self.app.close()
        return reason

    def _on_start(self, started: Started) -> None:
        # Only a hard time limit needs the supervisor to know at once; everything else it learns in batches.
        running = self.holdings.running()
        if started.time_limit_s and running is not None:
            self._start_reported = True
            self.reporter.send("started", running.seq, started.message_id, started.queue, started.task_id,
                               started.task, started.time_limit_s)

    def _loop(self, broker: Broker, executor: Executor) -> str:
        settings = self.settings
        done = 0
        backoff_s = 0.1
        while not self.stopping:
            self._send_settlements(broker)  # the finished batch's acks go out before the next fetch
            try:
                batch = broker.fetch(settings.queues, max_messages=settings.prefetch,
                                     timeout_s=settings.poll_timeout_s)
            except BrokerError as exc:
                log.warning("broker unreachable, retrying", error=str(exc), retry_in_s=backoff_s)
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            backoff_s = 0.1
            if not batch:
                continue
            held = self.holdings.add(batch)
            self.reporter.send("fetched", [(h.seq, h.delivery.queue, h.delivery.message_id,
                                            h.delivery.delivery_count) for h in held])
            while not self.stopping and (running := self.holdings.start_next()) is not None:
                if not self._run_one(executor, running):
                    continue
                done += 1
                if settings.max_tasks_per_child and done >= settings.max_tasks_per_child:
                    return "max_tasks"
                if settings.max_memory_per_child_mb and rss_mb() > settings.max_memory_per_child_mb:
                    return "max_memory"
        return "stopped"

    def _run_one(self, executor: Executor, running: Held) -> bool:
        """Run one delivery. False when it could not be finished: it is left to be delivered again."""
        delivery = running.delivery
        self.progress.start(running.seq)
        try:
            outcome = executor.run(delivery)
        except (BrokerConnectionError, BrokerError, ResultError) as exc:
            # Not acked: the lease runs out and the message is delivered again. Reported before Progress counts it
            # finished, since the supervisor acks the finished deliveries of a child that dies.
            log.warning("could not finish message, it will be redelivered", message_id=delivery.message_id,
                        error=str(exc))
            self.holdings.finish()
            self.reporter.send("dropped", [running.seq])
            self._finished(running.seq)
            return False
        self.holdings.finish()
        self.settlements.finished(running.seq, (outcome.task, delivery.queue, outcome.outcome, outcome.runtime_s))
        self._finished(running.seq)
        return True

    def _finished(self, seq: int) -> None:
        self.progress.finish(seq)
        if self._start_reported:
            self._start_reported = False
            self.reporter.send("finished", seq)

    def _send_settlements(self, broker: Broker) -> None:
        """Ack the finished deliveries and report them, with their metrics samples, in one event."""
        acks, seqs, samples = self.settlements.take()
        if acks:
            try:
                broker.ack(acks)
            except BrokerError as exc:
                log.warning("could not ack finished messages; when delivered again their stored results are found",
                            count=len(acks), error=str(exc))
        if seqs:
            self.reporter.send("done", seqs, samples)

    def _report_released(self, held: list[Held]) -> None:
        # Reported as they are taken, before the main thread can fetch and finish later deliveries: a supervisor
        # still holding them when this child dies would take them for finished (Progress) and ack them.
        self.reporter.send("released", [h.seq for h in held])

    def _give_back(self, broker: Broker, held: list[Held]) -> None:
        """Release deliveries taken with ``on_taken=self._report_released``."""
        if not held:
            return
        try:
            broker.release([h.delivery for h in held])
        except BrokerError as exc:
            log.warning("could not release prefetched messages; they return when their lease expires",
                        count=len(held), error=str(exc))

    def _background(self, broker: Broker) -> None:
        settings = self.settings
        extend_every_s = max(0.3, broker.settings.visibility_timeout_s / 3)
        now = time.monotonic()
        next_extend, next_beat = now + extend_every_s, now
        while not self._thread_stop.wait(_TICK_S):
            if os.getppid() != self.parent_pid:
                log.error("supervisor is gone; child exits, its messages return when their leases expire")
                self._send_settlements(broker)
                os._exit(1)
            now = time.monotonic()
            try:
                if now >= next_extend:
                    held = self.holdings.all() + self.settlements.unacked()
                    if held:
                        broker.extend(held)
                    next_extend = now + extend_every_s
                if self.settlements.overdue(ACK_DELAY_MAX_S):
                    self._send_settlements(broker)
                self._give_back(broker, self.holdings.take_waiting(
                    if_running_longer_than_s=settings.prefetch_release_s, on_taken=self._report_released))
            except BrokerError as exc:
                log.warning("lease renewal failed", error=str(exc))
            if now >= next_beat:
                self.reporter.send("beat")
                next_beat = now + HEARTBEAT_INTERVAL_S
            self._serve_commands(broker)

    def _serve_commands(self, broker: Broker) -> None:
        """Commands from the supervisor. ``("settle", seq)``: the running task is past its hard time limit and its
        FAILURE is stored; ack the message from here (the main thread is stuck in the task), since only this
        connection may settle it, together with the pending acks, and say so before being killed."""
        try:
            while self.conn.poll():
                command = self.conn.recv()
                running = self.holdings.running()
                if command[0] == "settle" and running is not None and running.seq == command[1]:
                    self._send_settlements(broker)
                    broker.ack([running.delivery])
                    self.reporter.send("settled", running.seq)
        except (EOFError, OSError):
            return  # the supervisor is gone; the orphan check ends this process
        except BrokerError as exc:
            log.warning("could not ack the timed-out task; it is acked on redelivery", error=str(exc))


def child_main(app: App, settings: WorkerSettings, conn: Connection, index: int,
               progress: Progress | None = None) -> None:
    """Entry point of a forked child process; ``progress`` is shared with the supervisor."""
    Child(app, settings, conn, index, progress).run()
