"""The prefork supervisor: forks the children, listens to their events, enforces hard time limits, gives back the
messages of children that die, respawns and recycles them, drains on SIGTERM, and serves health and metrics.

Children report in batches (taskfleet.worker.child, taskfleet.worker.events): the supervisor learns what a child
holds from its ``Fetched`` events and what it settled from ``Done``, ``Released``, ``Dropped`` and ``Settled``, and,
when it dies, which of those it had finished, was running or never started from the ``Progress`` they share.

A live child settles its own messages (its ``Settler``); the supervisor settles only a dead child's leftovers
(taskfleet.worker.child_exit). Past a hard time limit it stores the FAILURE and sends the child ``Settle``: only the
child's connection may ack the running message. It never shares a live broker connection with a child (each opens
its own after ``fork()``); its own is used only for hand-backs, time-limit results and readiness.

The control commands change it at runtime through its ``steering`` (taskfleet.worker.steering: revocations and
terminate, limits, queues, pool size); what its children must know of them (``runtime``: the revoked ids, the
limits, the shared rate limiter) is made before the first fork and inherited.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from queue import Empty, SimpleQueue
from types import FrameType

from taskfleet import backends, brokers
from taskfleet.app import App
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.brokers.base import Broker, Delivery
from taskfleet.errors import TaskfleetError, TimeLimitExceeded
from taskfleet.states import State
from taskfleet.worker import events
from taskfleet.worker.broker_sockets import BrokerSockets
from taskfleet.worker.child import STOP_SIGNALS, child_main
from taskfleet.worker.child_exit import exit_reason, give_back
from taskfleet.worker.child_record import ChildRecord, Running, forget
from taskfleet.worker.executor import exception_fields, keeps_results
from taskfleet.worker.logging import get_logger
from taskfleet.worker.metrics import WorkerMetrics
from taskfleet.worker.orphans import reap_orphans
from taskfleet.worker.progress import Progress
from taskfleet.worker.rate_limiter import LocalRateLimiter
from taskfleet.worker.runtime_state import RuntimeState
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.steering import Steering
from taskfleet.worker.tally import Tally

log = get_logger("taskfleet.worker")

_LOOP_TICK_S = 0.05
_RESPAWN_BACKOFF_MAX_S = 10.0
_READINESS_CACHE_S = 1.0
#: After a hard time limit, how long the child may take to ack the timed-out message itself before it is killed
#: (a message can only be acked on the connection that received it, e.g. on RabbitMQ).
_SETTLE_WAIT_S = 2.0


class Supervisor:
    """Runs ``settings.concurrency`` children until told to stop. ``run`` returns the process exit code."""

    def __init__(self, app: App, settings: WorkerSettings, metrics: WorkerMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.children: dict[int, ChildRecord] = {}
        self.draining = False
        self.drain_deadline = 0.0
        self.force_stop = False
        self._respawn_at: dict[int, float] = {}
        self._respawn_backoff: dict[int, float] = {}
        self._ctx = multiprocessing.get_context("fork")
        self._broker: Broker | None = None
        self._backend: ResultBackend | None = None
        self._readiness: tuple[float, bool, str] = (0.0, False, "not checked yet")
        #: The queues the children consume and the pool size now: the settings' at start, changed at runtime by
        #: control commands (``add_consumer``, ``pool_grow``...).
        self.queues: tuple[str, ...] = settings.queues
        self.concurrency: int = settings.concurrency
        self.started_at = time.time()
        #: What the children inherit and are told of the control commands' changes: revoked ids, limits, and the
        #: rate limiter they share (its memory is made here, before the fork).
        self.runtime = RuntimeState(rate_limiter=LocalRateLimiter(self._ctx.Lock()))
        self.steering = Steering(self)
        #: Tasks finished since the start (heartbeat records, ``inspect stats``).
        self.tally = Tally()
        #: Work other threads hand to the main loop (``call_soon``), run at its next tick.
        self._soon: SimpleQueue[Callable[[], None]] = SimpleQueue()
        #: Run once the first children are forked, before the main loop: what only the supervisor needs (the health
        #: server, prometheus_client) is started there, so the first children never hold its modules (children
        #: forked later, the replacements, inherit them, in pages shared copy-on-write with the supervisor).
        self.after_first_fork: list[Callable[[], None]] = []

    # -- connections of the supervisor itself --------------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = brokers.connect(self.app.settings.broker_settings())
        return self._broker

    @property
    def backend(self) -> ResultBackend | None:
        if self._backend is None:
            bs = self.app.settings.backend_settings()
            self._backend = None if bs is None else backends.connect(bs)
        return self._backend

    # -- main loop -----------------------------------------------------------------------------------------------

    def run(self) -> int:
        # As a container's PID 1 (the image's exec-form entrypoint) the supervisor inherits every orphaned process
        # (say, a grandchild a task left behind) and must reap them, or they stay zombies.
        self._is_pid1 = os.getpid() == 1
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        self.steering.refresh_revocations()  # before the fork: children start with them
        for slot in range(self.concurrency):
            self._spawn(slot)
        self._run_after_first_fork()
        while self.children or not self.draining:
            self._tick()
        self.metrics.set_children(0)
        log.info("worker stopped", forced=self.force_stop)
        self.steering.close()
        for closable in (self._broker, self._backend):
            if closable is not None:
                closable.close()
        return 0

    def _run_after_first_fork(self) -> None:
        for fn in self.after_first_fork:
            try:
                fn()
            except Exception:  # the children run already: a supervisor-only extra must not orphan them
                log.exception("starting a supervisor-only service after the first fork failed")

    def stop(self) -> None:
        """Drain and stop, as SIGTERM does (the ``shutdown`` command)."""
        self._on_stop_signal(signal.SIGTERM, None)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.draining:
            self.draining = True
            self.drain_deadline = time.monotonic() + self.settings.drain_timeout_s
            log.info("draining: no new tasks; running ones may finish", signal=signal.Signals(signum).name,
                     drain_timeout_s=self.settings.drain_timeout_s, running=self._running_count())
            self._stop_children()
        else:
            self.force_stop = True

    def _stop_children(self) -> None:
        """SIGTERM every child not sent one yet. Also run at each tick of a drain: the signal handler may have run
        while a child was being forked, before it was recorded, and that child must not wait out the drain timeout."""
        for rec in self.children.values():
            if not rec.stop_sent:
                rec.stop_sent = True
                self._signal(rec, signal.SIGTERM)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the main loop at its next tick (within about ``_LOOP_TICK_S``); safe from any thread. The
        control server hands requests over this way, so handlers see and change the supervisor's state on the
        thread that owns it. An exception from ``fn`` is logged, never raised."""
        self._soon.put(fn)

    def _run_soon(self) -> None:
        while True:
            try:
                fn = self._soon.get_nowait()
            except Empty:
                return
            try:
                fn()
            except Exception:  # a handler's bug must never stop the supervisor
                log.exception("work handed to the supervisor's loop failed")

    def _tick(self) -> None:
        self._wait_events()
        self._run_soon()
        for rec in list(self.children.values()):
            if not rec.process.is_alive():
                self._reap(rec)
        now = time.monotonic()
        self._enforce_time_limits(now)
        self.steering.tick(now)
        if self.draining:
            self._stop_children()
        if self.draining and self.children and (self.force_stop or now >= self.drain_deadline):
            log.warning("drain timeout or second signal: stopping children; their messages are given back",
                        running=self._running_count())
            for rec in self.children.values():
                rec.killed_in_drain = True
                self._signal(rec, signal.SIGKILL)
        if not self.draining:
            for slot, at in list(self._respawn_at.items()):
                if now >= at:
                    del self._respawn_at[slot]
                    self._spawn(slot)
        self.metrics.set_in_flight(sum(len(rec.held) for rec in self.children.values()))
        if self._is_pid1:
            reap_orphans({rec.process.pid for rec in self.children.values() if rec.process.pid is not None})

    def _wait_events(self) -> None:
        """Wait up to a tick for children's events, deaths and handed-over broker sockets; take in events and
        sockets (deaths are the caller's)."""
        conns = {rec.conn: rec for rec in self.children.values()}
        sentinels = {rec.process.sentinel: rec for rec in self.children.values()}
        handovers = {rec.sockets.fileno(): rec for rec in self.children.values()}
        ready = wait([*conns, *sentinels, *handovers], timeout=_LOOP_TICK_S) if conns else []
        if not conns:
            time.sleep(_LOOP_TICK_S)
        for obj in ready:
            if obj in conns:
                self._drain_events(conns[obj])
            elif obj in handovers:
                handovers[obj].sockets.take()

    # -- children ------------------------------------------------------------------------------------------------

    @property
    def respawn_pending(self) -> dict[int, float]:
        """Slots whose child exited and is respawned at the given monotonic time."""
        return self._respawn_at

    def spawn(self, slot: int) -> None:
        """Fork a child into ``slot`` now."""
        self._spawn(slot)

    def signal_child(self, rec: ChildRecord, signum: int) -> None:
        self._signal(rec, signum)

    def _spawn(self, slot: int) -> None:
        ours, theirs = self._ctx.Pipe(duplex=True)  # events up, commands (Settle) down
        sockets = BrokerSockets()  # broker sockets up
        progress = Progress()
        # Closed in the child at once: the other children's broker sockets (a copy kept open there would keep that
        # connection, and its deliveries, alive) and this supervisor's end of every child's pipe and hand-over, the
        # new child's included (a copy kept open there would keep a dead supervisor's pipe from breaking: a report
        # to it would block once the pipe is full, and the child would never notice the supervisor is gone).
        inherited = (*(fd for rec in self.children.values()
                       for fd in (*rec.sockets.fds, rec.sockets.fileno(), rec.conn.fileno())),
                     ours.fileno(), sockets.fileno())
        settings = dataclasses.replace(self.settings, queues=self.queues)  # the queues now, maybe changed
        process = self._ctx.Process(target=child_main, args=(self.app, settings, theirs, slot, progress,
                                                             sockets.theirs, inherited, self.runtime),
                                    name=f"taskfleet-child-{slot}", daemon=False)
        # Forked with stop signals blocked: the child unblocks them once its own handler is set (``Child.run``), so
        # a SIGTERM sent to it in between is not taken by the supervisor's handler it inherited.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        theirs.close()
        sockets.forked()
        now = time.monotonic()
        self.children[slot] = ChildRecord(slot=slot, process=process, conn=ours, progress=progress, spawned=now,
                                          last_beat=now, sockets=sockets)
        self.metrics.set_children(len(self.children))
        log.debug("child started", slot=slot, pid=process.pid)

    @staticmethod
    def _signal(rec: ChildRecord, signum: int) -> None:
        if rec.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.process.pid, signum)

    def _drain_events(self, rec: ChildRecord) -> None:
        try:
            while rec.conn.poll():
                self._on_event(rec, rec.conn.recv())
        except (EOFError, OSError):
            pass

    def _on_event(self, rec: ChildRecord, event: events.Event) -> None:
        now = time.monotonic()
        rec.last_beat = now
        match event:
            case events.Done(seqs, samples):
                forget(rec, seqs)
                for task, queue, outcome, runtime_s in samples:
                    self.metrics.task_finished(task, queue, outcome, runtime_s)
                    self.tally.finished(task, outcome)
            case events.Fetched(items):
                for seq, queue, message_id, delivery_count in items:
                    rec.held[seq] = Delivery(queue, message_id, b"", delivery_count)
            case events.Started() | events.Finished():
                self._track_time_limited(rec, event, now)
            case events.Released(seqs) | events.Dropped(seqs):  # dropped: delivered again when its lease runs out
                forget(rec, seqs)
            case events.Settled(seq):
                rec.held.pop(seq, None)
                rec.settled = True
            case events.Exiting(reason):
                rec.exit_reason = reason
            case events.Ready() | events.Beat():
                pass

    @staticmethod
    def _track_time_limited(rec: ChildRecord, event: events.Started | events.Finished, now: float) -> None:
        """Only tasks with a hard time limit are reported as they start and end."""
        match event:
            case events.Started(seq, message_id, queue, task_id, task, time_limit_s):
                rec.running = Running(seq, message_id, queue, task_id, task, now, now + time_limit_s)
            case events.Finished(seq) if rec.running is not None and rec.running.seq == seq:
                rec.running = None

    def _enforce_time_limits(self, now: float) -> None:
        """Past a hard time limit: store the FAILURE, ask the child to ack the message (store-then-ack), then
        SIGKILL it once it has, or after ``_SETTLE_WAIT_S``."""
        for rec in self.children.values():
            running = rec.running
            if running and rec.progress.finished >= running.seq:
                rec.running = running = None  # it has just finished; its event is on the way
            if running and running.deadline is not None and now >= running.deadline and rec.killed_for is None:
                log.error("hard time limit exceeded: killing child", task_id=running.task_id, task=running.task,
                          slot=rec.slot, pid=rec.process.pid, runtime_s=round(now - running.started, 3))
                rec.killed_for = running
                rec.kill_at = now + _SETTLE_WAIT_S
                try:
                    self._fail_time_limit(running)
                    rec.conn.send(events.Settle(running.seq))
                except (TaskfleetError, OSError) as exc:
                    log.warning("could not settle the timed-out task before killing its child", error=str(exc))
                    rec.kill_at = now
            if rec.killed_for is not None and not rec.kill_sent and (rec.settled or now >= rec.kill_at):
                rec.kill_sent = True
                self._signal(rec, signal.SIGKILL)

    def _reap(self, rec: ChildRecord) -> None:
        self._drain_events(rec)
        rec.process.join(timeout=1)
        rec.conn.close()
        del self.children[rec.slot]
        self.metrics.set_children(len(self.children))
        lived_s = time.monotonic() - rec.spawned
        reason = exit_reason(rec, draining=self.draining)
        rec.sockets.take()  # sent just before it died
        try:
            give_back(self.broker, rec)
        finally:
            rec.sockets.close()  # only now may the broker take back what the child held
        if reason != "stopped":
            self.metrics.child_restarted(reason)
        if rec.slot in self.steering.retiring:  # pool_shrink: not replaced
            self.steering.retiring.discard(rec.slot)
        elif not self.draining:
            backoff = self._respawn_backoff.get(rec.slot, 0.0)
            backoff = min(_RESPAWN_BACKOFF_MAX_S, max(0.5, backoff * 2)) if reason == "crashed" and lived_s < 2 else 0
            self._respawn_backoff[rec.slot] = backoff
            self._respawn_at[rec.slot] = time.monotonic() + backoff

    def _fail_time_limit(self, running: Running) -> None:
        runtime = time.monotonic() - running.started
        self.metrics.task_finished(running.task, running.queue, "time_limit", runtime)
        self.tally.finished(running.task, "time_limit")
        if self.backend is None or not keeps_results(self.app.tasks.get(running.task)):
            return
        error = TimeLimitExceeded(f"{running.task} exceeded its time limit after {runtime:.1f}s; its child was killed")
        self.backend.store(ResultRecord(task_id=running.task_id, state=State.FAILURE, task=running.task,
                                        **exception_fields(error, self.app.serializer.dumps)))

    def _running_count(self) -> int:
        return sum(1 for rec in self.children.values() if rec.progress.running() is not None)

    # -- health --------------------------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        """Alive when every child slot has a child that sent a heartbeat recently."""
        now = time.monotonic()
        stalled = [rec.slot for rec in list(self.children.values())
                   if now - rec.last_beat > self.settings.child_stall_s]
        if stalled:
            return False, f"children {stalled} sent no heartbeat for {self.settings.child_stall_s}s"
        missing = self.concurrency - len(self.children)
        if missing and not self.draining and all(now - at > self.settings.child_stall_s
                                                 for at in self._respawn_at.values()):
            return False, f"{missing} child slots have no child"
        return True, f"ok: {len(self.children)} children"

    def readiness(self) -> tuple[bool, str]:
        """Ready when the broker answers (checked at most once a second) and the worker is not draining."""
        if self.draining:
            return False, "draining"
        checked, ok, detail = self._readiness
        now = time.monotonic()
        if now - checked >= _READINESS_CACHE_S:
            try:
                self.broker.ping()
                ok, detail = True, "ok: broker reachable"
            except TaskfleetError as exc:
                ok, detail = False, f"broker unreachable: {exc}"
            self._readiness = (now, ok, detail)
            self.metrics.set_broker_reachable(ok)
        return ok, detail
