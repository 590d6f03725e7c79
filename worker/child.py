"""A worker child process: fetch a batch, run it message by message, report to the supervisor.

A background thread renews the leases of everything the child holds (so a healthy long task is never delivered
twice), gives unstarted prefetched messages back when one task runs long, sends heartbeats, and exits the process
if the supervisor is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
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
_TICK_S = 0.05


class Holdings:
    """The deliveries a child holds: the one running and the prefetched ones waiting. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[Delivery] = deque()
        self._running: Delivery | None = None
        self._running_since = 0.0

    def add(self, batch: Sequence[Delivery]) -> None:
        with self._lock:
            self._waiting.extend(batch)

    def start_next(self) -> Delivery | None:
        with self._lock:
            self._running = self._waiting.popleft() if self._waiting else None
            self._running_since = time.monotonic()
            return self._running

    def finish(self) -> None:
        with self._lock:
            self._running = None

    def running(self) -> Delivery | None:
        with self._lock:
            return self._running

    def all(self) -> list[Delivery]:
        with self._lock:
            return [*self._waiting, *([self._running] if self._running else [])]

    def take_waiting(self, *, if_running_longer_than_s: float | None = None) -> list[Delivery]:
        """Remove and return the unstarted deliveries (only when a task has run that long, if given)."""
        with self._lock:
            if if_running_longer_than_s is not None and (
                self._running is None or time.monotonic() - self._running_since < if_running_longer_than_s
            ):
                return []
            taken = list(self._waiting)
            self._waiting.clear()
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

    def __init__(self, app: App, settings: WorkerSettings, conn: Connection, index: int) -> None:
        self.app = app
        self.settings = settings
        self.index = index
        self.conn = conn
        self.reporter = Reporter(conn)
        self.holdings = Holdings()
        self.stopping = False
        self.parent_pid = os.getppid()
        self._thread_stop = threading.Event()

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> str:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
        broker = self.app.broker
        executor = Executor(self.app, broker, self.app.backend, on_start=self._on_start)
        thread = threading.Thread(target=self._background, args=(broker,), name="taskfleet-lease", daemon=True)
        thread.start()
        self.reporter.send("ready", os.getpid())
        reason = "stopped"
        try:
            reason = self._loop(broker, executor)
        finally:
            self._thread_stop.set()
            thread.join(timeout=5)
            self._give_back(broker, self.holdings.take_waiting())
            self.reporter.send("exiting", reason)
            self.app.close()
        return reason

    def _on_start(self, started: Started) -> None:
        self.reporter.send("started", started.message_id, started.queue, started.task_id, started.task,
                           started.time_limit_s)

    def _loop(self, broker: Broker, executor: Executor) -> str:
        settings = self.settings
        done = 0
        backoff_s = 0.1
        while not self.stopping:
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
            self.holdings.add(batch)
            self.reporter.send("fetched", [(d.queue, d.message_id, d.delivery_count) for d in batch])
            while not self.stopping and (delivery := self.holdings.start_next()) is not None:
                try:
                    outcome = executor.run(delivery)
                except (BrokerConnectionError, BrokerError, ResultError) as exc:
                    # Not acked: the lease runs out and the message is delivered again.
                    log.warning("could not finish message, it will be redelivered", message_id=delivery.message_id,
                                error=str(exc))
                    self.holdings.finish()
                    self.reporter.send("finished", delivery.message_id, delivery.queue, "?", "error", 0.0)
                    continue
                self.holdings.finish()
                self.reporter.send("finished", delivery.message_id, delivery.queue, outcome.task, outcome.outcome,
                                   outcome.runtime_s)
                done += 1
                if settings.max_tasks_per_child and done >= settings.max_tasks_per_child:
                    return "max_tasks"
                if settings.max_memory_per_child_mb and rss_mb() > settings.max_memory_per_child_mb:
                    return "max_memory"
        return "stopped"

    def _give_back(self, broker: Broker, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        try:
            broker.release(deliveries)
        except BrokerError as exc:
            log.warning("could not release prefetched messages; they return when their lease expires",
                        count=len(deliveries), error=str(exc))
            return
        self.reporter.send("released", [d.message_id for d in deliveries])

    def _background(self, broker: Broker) -> None:
        settings = self.settings
        extend_every_s = max(0.3, broker.settings.visibility_timeout_s / 3)
        now = time.monotonic()
        next_extend, next_beat = now + extend_every_s, now
        while not self._thread_stop.wait(_TICK_S):
            if os.getppid() != self.parent_pid:
                log.error("supervisor is gone; child exits, its messages return when their leases expire")
                os._exit(1)
            now = time.monotonic()
            try:
                if now >= next_extend:
                    held = self.holdings.all()
                    if held:
                        broker.extend(held)
                    next_extend = now + extend_every_s
                self._give_back(broker, self.holdings.take_waiting(
                    if_running_longer_than_s=settings.prefetch_release_s))
            except BrokerError as exc:
                log.warning("lease renewal failed", error=str(exc))
            if now >= next_beat:
                self.reporter.send("beat")
                next_beat = now + HEARTBEAT_INTERVAL_S
            self._serve_commands(broker)

    def _serve_commands(self, broker: Broker) -> None:
        """Commands from the supervisor. ``("settle", message_id)``: the running task is past its hard time limit
        and its FAILURE is stored; ack the message from here (the main thread is stuck in the task), since only this
        connection may settle it, and say so before being killed."""
        try:
            while self.conn.poll():
                command = self.conn.recv()
                running = self.holdings.running()
                if command[0] == "settle" and running is not None and running.message_id == command[1]:
                    broker.ack([running])
                    self.reporter.send("settled", running.message_id)
        except (EOFError, OSError):
            return  # the supervisor is gone; the orphan check ends this process
        except BrokerError as exc:
            log.warning("could not ack the timed-out task; it is acked on redelivery", error=str(exc))


def child_main(app: App, settings: WorkerSettings, conn: Connection, index: int) -> None:
    """Entry point of a forked child process."""
    Child(app, settings, conn, index).run()
