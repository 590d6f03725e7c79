"""A worker child process: fetch a batch, run it message by message, settle it in batches, report to the supervisor.

Per delivery the ``Executor`` runs the task, stores its outcome and returns a decision; the child's ``Settler``
(taskfleet.worker.settler) carries it out and is the only thing here that acks, dead-letters, releases or renews a
message. Acks of finished deliveries wait until the fetched batch is done (before the next fetch), or
``ACK_DELAY_MAX_S`` at most (the background thread, taskfleet.worker.child_thread, sends them while a slow task
runs), and always go out before the child exits. A child that dies with acks pending has them sent by the supervisor
(on brokers that settle from any connection, Redis and SQLite); otherwise the messages are delivered again and
recognised by their stored final state.

Reporting costs the supervisor a wake-up per message, so it is batched too (taskfleet.worker.events): per fetched
batch one ``Fetched`` event and, per ack batch, one ``Done`` event with the metrics samples. The supervisor must
know every delivery the child's broker connection holds before the child can die with it: on RabbitMQ the broker
pushes deliveries into the connection's buffer (its prefetch) while a task runs, so the background thread takes
whatever has arrived there each tick (``Broker.fetch_buffered``; nothing on the other brokers) into the holdings,
behind the waiting ones, and reports it with one ``Fetched`` event (none when nothing arrived); before each task the
main thread does the same for what the child has already read off the socket (no system call when nothing). Which
of its deliveries is running and which are finished lives in ``Progress`` (taskfleet.worker.progress), memory shared
with the supervisor, which reads it when the child dies to settle each delivery correctly. Only a task with a hard time
limit is reported as it starts and ends (``Started``, ``Finished``), since the supervisor enforces that limit.

Before a prefetched delivery starts, the child makes sure its lease is still held: certainly so when it was fetched
or renewed recently by the local clock (taskfleet.worker.holdings), else it asks the broker (``Broker.extend``
reports what it still holds). One whose lease was lost (the child was stopped past its visibility timeout and the
message went to another) is dropped unrun and reported ``Dropped``.

Around its work the child sends ``worker_process_init`` (once its background thread runs, before the first fetch)
and, when it exits normally, ``worker_process_shutdown`` (taskfleet.signals).

With ``send_task_events`` (``-E``) the child's ``TaskEvents`` (taskfleet.worker.task_events) is told when a task
starts and how it ended, and the background thread sends what it collected every ``EVENTS_FLUSH_S``, through a
fleet store of the child's own; without it there is no ``TaskEvents`` and each hook is one ``is None`` check.

Unless ``redirect_stdouts`` is off, the child's ``sys.stdout`` and ``sys.stderr`` log each line written to them
(taskfleet.worker.log_redirect) from before ``worker_process_init`` to the child's end; the child tells them when a
task starts and ends, so a task's ``print()`` is a log event with its ``task_id``.

A background thread (taskfleet.worker.child_thread) renews the leases of everything the child holds, takes in
deliveries already pushed to its connection, sends overdue acks, gives back unstarted prefetched messages that
waited too long, sends task events and heartbeats, serves the supervisor's commands, and exits the process if the
supervisor is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING

from taskfleet import signals, tracing
from taskfleet.app import App
from taskfleet.brokers.base import Broker
from taskfleet.errors import BrokerError
from taskfleet.fleet.records import worker_id
from taskfleet.worker import events
from taskfleet.worker.child_thread import ChildThread
from taskfleet.worker.events import Reporter
from taskfleet.worker.executor import Admitted, Executor, Outcome, Started
from taskfleet.worker.fetch_window import FetchWindow
from taskfleet.worker.holdings import Held, Holdings, Lease, lease_clock
from taskfleet.worker.log_redirect import Redirect, redirect_stdouts
from taskfleet.worker.logging import get_logger
from taskfleet.worker.outcomes import FirstCoroutine
from taskfleet.worker.progress import Progress
from taskfleet.worker.runtime_state import RuntimeState
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.settler import Settler

if TYPE_CHECKING:
    from taskfleet.worker.async_runner import AsyncRunner
    from taskfleet.worker.task_events import TaskEvents

log = get_logger("taskfleet.worker")

#: The signals that stop a child (SIGINT is ignored there): blocked while it is forked, until its handler is set.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; falls back to peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

#: What ``Child._loop`` returns when the child ran its first ``async def`` task: go on in the async loop.
_ASYNC = "async"


class TaskTerminated(BaseException):  # not an Exception, so a task cannot catch it
    """Raised in the running task by the signal of a terminate: the task ends here, and so does the child."""


class Child:
    """The loop of one child process. ``run`` returns the exit reason."""

    def __init__(self, app: App, settings: WorkerSettings, conn: Connection, index: int,
                 progress: Progress | None = None, handover: socket.socket | None = None,
                 output: Redirect | None = None, runtime: RuntimeState | None = None) -> None:
        self.app = app
        #: Revoked ids and runtime limits, inherited from the supervisor and updated by its commands.
        self.runtime = runtime if runtime is not None else RuntimeState()
        self.queues = settings.queues  # changed by ``Consume``
        self._terminating: int | None = None  # the delivery a ``Terminate`` settled: its task ends at the signal
        #: This process's redirected stdout and stderr (``taskfleet.worker.log_redirect``), told when tasks start
        #: and end so that what they write carries their id; None when not redirected.
        self.output = output
        self.handover = handover
        self.settings = settings
        self.index = index
        self.conn = conn
        self.reporter = Reporter(conn)
        self.holdings = Holdings()
        #: How many messages a fetch asks for: fewer than ``prefetch`` for slow tasks (taskfleet.worker.fetch_window).
        self.window = FetchWindow(prefetch=settings.prefetch, release_s=settings.prefetch_release_s)
        self.progress = progress if progress is not None else Progress()
        self.stopping = False
        self.parent_pid = os.getppid()
        self._thread_stop = threading.Event()
        self._executor: Executor | None = None
        #: After the first ``async def`` task (docs/async.md): the event loop, that task's delivery (admitted by the
        #: sync loop, started by the async one), the tasks done before, and the background thread's stuck check.
        self._async: AsyncRunner | None = None
        self._first: tuple[Held, Admitted] | None = None
        self._done = 0
        self._watch_loop: Callable[[], None] | None = None
        self._start_reported = False
        #: Held by the thread taking deliveries in (the main thread's fetch, the background thread's take of the
        #: buffered ones) until they are held and reported: they are held and numbered in the order they arrived.
        self._intake = threading.Lock()
        #: Task events (``-E``), collected by the hooks below and sent by the background thread; None when off, and
        #: then each hook costs one ``is None`` check.
        self._events: TaskEvents | None = None

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self._terminating is not None and self.progress.running() == self._terminating:
            raise TaskTerminated(f"terminated by a revoke (signal {signum})")

    def run(self) -> str:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked since the fork (``Supervisor._spawn``)
        broker = self.app.broker
        if self.handover is not None:
            broker.watch_connections(self._hand_over)
        executor = Executor(self.app, self.app.backend, on_start=self._on_start, runtime=self.runtime,
                            run_coroutine=self._run_coroutine)
        settler = Settler(broker, self.reporter)
        self._executor = executor
        if self.settings.send_task_events:
            from taskfleet.worker.task_events import TaskEvents  # -E only: not in an idle worker without it

            self._events = TaskEvents.for_app(self.app, worker=worker_id(pid=self.parent_pid))
        thread = threading.Thread(target=ChildThread(self, broker, settler).run, name="taskfleet-lease", daemon=True)
        thread.start()
        signals.send(signals.worker_process_init, None)  # per-process resources (database connections), then work
        tracing.process_started()  # after those receivers: one may set up OpenTelemetry (docs/tracing.md)
        self.reporter.send(events.Ready(os.getpid()))
        reason = "stopped"
        clean = False
        try:
            reason = self._loop(broker, executor, settler)
            if reason == _ASYNC:  # it ran its first async def task: on with many at once (docs/async.md)
                reason = self._loop_async(broker, executor, settler)
            clean = True
        except TaskTerminated:
            log.info("task terminated: child exits", slot=self.index)
            reason, clean = "revoked", True
        finally:
            self._thread_stop.set()
            thread.join(timeout=5)
            settler.flush()
            settler.give_back(self.holdings)
            if self._events is not None:  # the background thread has stopped: this thread may use its store
                self._events.close()
            self.reporter.send(events.Exiting(reason))
            if clean:  # before the connections close: a receiver may still use them
                signals.send(signals.worker_process_shutdown, None, pid=os.getpid(), exitcode=0)
            self.app.close()
        return reason

    def _hand_over(self, fd: int) -> None:
        """Send the socket of a new broker connection to the supervisor, which keeps it open until it has given
        back what this child held should it die (``Broker.watch_connections``)."""
        assert self.handover is not None
        try:
            socket.send_fds(self.handover, [b"c"], [fd])
        except OSError as exc:  # the supervisor is gone: the orphan check ends this process
            log.warning("could not hand the broker connection to the supervisor", error=str(exc))

    def _on_start(self, started: Started) -> None:
        running = self.holdings.running()  # None for an async task: several run at once (async_loop)
        if self.output is not None and running is not None:
            self.output.begin_task(started.task_id, started.task)
        if self._events is not None:
            self._events.started(started)
        # Only a hard time limit needs the supervisor to know at once; everything else it learns in batches.
        if running is not None:  # shared memory, no event: the supervisor reads it for heartbeats and inspect
            self.progress.describe(running.seq, started.task_id, started.task, time.time())
        if started.time_limit_s and running is not None:
            self._start_reported = True
            self.reporter.send(events.Started(running.seq, started.message_id, started.queue, started.task_id,
                                              started.task, started.time_limit_s))

    def _loop(self, broker: Broker, executor: Executor, settler: Settler) -> str:
        settings = self.settings
        done = 0
        backoff_s = 0.1
        while not self.stopping:
            settler.flush()  # the finished batch's acks go out before the next fetch
            try:
                with self._intake:  # not while deliveries the background thread took in wait: they run first
                    if not self.holdings.waiting():
                        batch = broker.fetch(self.queues, max_messages=self.window.size(),
                                             timeout_s=settings.poll_timeout_s)
                        # The leases were granted during the call: its reply latency is in the margin.
                        self.holdings.add(batch, confirmed_at=lease_clock(), on_added=self._report_fetched)
            except BrokerError as exc:
                log.warning("broker unreachable, retrying", error=str(exc), retry_in_s=backoff_s)
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            backoff_s = 0.1
            while not self.stopping:
                self._take_buffered(broker, read_socket=False)  # reported before a task can take the child down
                if (running := self.holdings.start_next()) is None:
                    break
                if not self._lease_held(broker, settler, running):
                    self.holdings.finish()
                    continue
                began = time.monotonic()
                if not self._run_one(executor, settler, running):
                    if self._first is not None:
                        return _ASYNC
                    continue
                self.window.observe(time.monotonic() - began)
                done += 1
                self._done = done
                if settings.max_tasks_per_child and done >= settings.max_tasks_per_child:
                    return "max_tasks"
                if settings.max_memory_per_child_mb and rss_mb() > settings.max_memory_per_child_mb:
                    return "max_memory"
        return "stopped"

    def _run_coroutine(self, admitted: Admitted) -> Outcome:
        """The executor's way to run an ``async def`` task in the sync loop: the first one switches the child to the
        async loop, which starts it. Until then no event loop: sync tasks cost as before (asyncio is ~2 MiB)."""
        raise FirstCoroutine(admitted)

    def _loop_async(self, broker: Broker, executor: Executor, settler: Settler) -> str:
        """The loop of a child that met an ``async def`` task (taskfleet.worker.async_loop): up to
        ``async_concurrency`` deliveries at once, for the rest of its life."""
        from taskfleet.worker.async_loop import AsyncChildLoop
        from taskfleet.worker.async_runner import AsyncRunner

        assert self._first is not None
        self._async = AsyncRunner(self.settings.async_concurrency)
        self.holdings.run_concurrently()  # the first async task's delivery, started by the sync loop
        loop = AsyncChildLoop(self, broker, executor, settler, self._async, done=self._done, first=self._first)
        self._watch_loop = loop.report_stuck
        return loop.run()

    def _lease_held(self, broker: Broker, settler: Settler, running: Held) -> bool:
        """Whether ``running``, about to start, is still leased to this child; if not it is dropped unrun. Asks the
        broker only when the local clock cannot tell (``Holdings.lease``): after a stall, or a failed renewal."""
        vt_s = broker.settings.visibility_timeout_s
        lease = self.holdings.lease(running.seq, lease_clock(), vt_s)
        if lease is Lease.UNCERTAIN:
            try:
                settler.renew_leases(self.holdings)  # one call for everything held: the rest are known after it
            except BrokerError as exc:
                settler.drop_unrun(running, lost=False, error=str(exc))
                return False
            lease = self.holdings.lease(running.seq, lease_clock(), vt_s)
        if lease is Lease.LOST:
            settler.drop_unrun(running, lost=True)
            return False
        return True  # certain, or confirmed by the renewal just made

    def _report_fetched(self, held: list[Held]) -> None:
        self.reporter.send(events.Fetched([(h.seq, h.delivery.queue, h.delivery.message_id, h.delivery.delivery_count)
                                           for h in held]))

    def _take_buffered(self, broker: Broker, *, read_socket: bool = True) -> None:
        """Hold and report what the broker has already pushed to this child's connection and no fetch returned
        (RabbitMQ's prefetch buffer, while a task runs), so the supervisor knows it should this child die (see the
        module notes). Not while the main thread fetches: that fetch takes it. The background thread reads the
        socket each tick; before each task the main thread takes, without a system call, what the child has read
        off it already (more than its fetch returned, or during an ack's or a redelivery's call): a task that kills
        its child as it starts would otherwise leave those unreported, to come back counted."""
        if not self._intake.acquire(blocking=False):
            return
        try:
            taken = broker.fetch_buffered(self.settings.prefetch, read_socket=read_socket)
            if taken:  # pushed just now on the connection that holds them (RabbitMQ's lease): confirmed as taken
                self.holdings.add(taken, confirmed_at=lease_clock(), on_added=self._report_fetched)
        finally:
            self._intake.release()

    def _run_one(self, executor: Executor, settler: Settler, running: Held) -> bool:
        """Run one delivery and settle it. False when it could not be finished: it is left to be delivered again."""
        self.progress.start(running.seq)
        try:
            outcome = executor.run(running.delivery)
        except FirstCoroutine as first:  # admitted, not begun: the async loop starts it (``_run_coroutine``)
            self._first = (running, first.admitted)
            return False
        finally:
            if self.output is not None:
                self.output.end_task()  # its partial lines, before the next task's
        settled = settler.settle(running, outcome)
        if self._events is not None and settled:
            self._events.finished(running.delivery, outcome)
        self.holdings.finish()
        # After the settler reported a dropped delivery: the supervisor acks the finished ones of a child that dies.
        self.progress.finish(running.seq)
        if self._start_reported:
            self._start_reported = False
            self.reporter.send(events.Finished(running.seq))
        return settled


def child_main(app: App, settings: WorkerSettings, conn: Connection, index: int,
               progress: Progress | None = None, handover: socket.socket | None = None,
               inherited: tuple[int, ...] = (), runtime: RuntimeState | None = None) -> None:
    """Entry point of a forked child process; ``progress`` is shared with the supervisor, ``handover`` takes this
    child's broker sockets to it. ``inherited``: the supervisor's descriptors that must not live on here, closed at
    once: other children's broker sockets (a copy kept open here would keep that connection, and its deliveries,
    alive) and the supervisor's ends of the children's pipes and hand-overs (so that they break when it dies).
    ``runtime``: the supervisor's revoked ids, limits and rate limiter at the fork."""
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    # Before anything runs here, so that a worker_process_init receiver's print() is logged too.
    output = redirect_stdouts() if settings.redirect_stdouts else None
    try:
        Child(app, settings, conn, index, progress, handover, output, runtime).run()
    finally:
        if output is not None:
            output.restore()
