"""The supervisor's side of the control commands: it applies revocations (and terminates), runtime limits, queue
and pool changes to itself and its children (taskfleet.worker.control_commands calls it; the supervisor's main
loop calls ``tick``).

- **Revocations.** Loaded from the fleet store before the first fork (children inherit them), re-read every
  ``REVOCATIONS_REFRESH_S`` by a thread of their own (so one whose control message this worker missed still
  arrives, and a slow or unreachable broker never holds up the main loop; what it read is applied in the loop) and
  heard as ``revoke`` commands; what is new goes to every child (``events.Revoke``).
- **Terminate.** The child running a revoked task id has REVOKED stored, is asked to ack that delivery
  (``events.Terminate``, as a hard time limit's ``Settle``), then gets the revocation's signal and, after
  ``WorkerSettings.terminate_grace_s``, SIGKILL. Its delivery is treated as finished (acked, never delivered
  again) and a new child takes its place (exit reason ``revoked``).
- **Limits, queues, pool.** Kept here, sent whole to every child when they change, inherited by children forked
  later. Shrinking the pool stops idle children first and never goes below one child.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskfleet.backends.base import ResultRecord
from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.errors import TaskfleetError
from taskfleet.fleet.revocations import Revocation, signal_number
from taskfleet.states import State
from taskfleet.worker import events
from taskfleet.worker.executor import keeps_results
from taskfleet.worker.logging import get_logger
from taskfleet.worker.task_limits import LimitOverrides

if TYPE_CHECKING:
    from taskfleet.worker.child_record import ChildRecord
    from taskfleet.worker.supervisor import Supervisor

log = get_logger("taskfleet.worker")

#: How often (seconds) the supervisor re-reads the stored revocations.
REVOCATIONS_REFRESH_S = 2.0
#: How long (seconds) a terminated task's child may take to ack its delivery before it gets the signal anyway.
_SETTLE_WAIT_S = 2.0


@dataclass
class Termination:
    """A child whose running delivery ``seq`` (task ``task_id``) was revoked with terminate."""

    seq: int
    task_id: str
    signum: int
    signal_at: float  # monotonic: send the signal then, or as soon as the child acked the delivery
    signal_sent: bool = False
    kill_at: float = 0.0  # monotonic: SIGKILL then, when the signal did not end it
    kill_sent: bool = False


class Steering:
    """Applies the control commands to ``supervisor`` and its children."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        #: Slots being stopped by ``pool_shrink``: not respawned when their child exits.
        self.retiring: set[int] = set()
        self._store: FleetStore | None = None
        self._store_failed = False
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()

    # -- revocations -----------------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Every main-loop tick: move terminations on (and start re-reading the revocations, once)."""
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll_revocations, name="taskfleet-revocations", daemon=True)
            self._poller.start()
        self._enforce_terminations(now)

    def refresh_revocations(self) -> None:
        """Apply the fleet store's live revocations now (at start, before the fork); logged when it fails."""
        stored = self._read_revocations()
        if stored is not None:
            self.revoke(stored)

    def _poll_revocations(self) -> None:
        """The poller thread: read every ``REVOCATIONS_REFRESH_S``, apply in the main loop."""
        while not self._stop_polling.wait(REVOCATIONS_REFRESH_S):
            stored = self._read_revocations()
            if stored is not None:
                self.sup.call_soon(functools.partial(self._apply_revocations, stored))

    def _apply_revocations(self, stored: list[Revocation]) -> None:
        self.revoke(stored)

    def _read_revocations(self) -> list[Revocation] | None:
        """The stored revocations; None when they could not be read (logged once until a read succeeds)."""
        try:
            if self._store is None:
                self._store = connect_fleet_store(self.sup.broker, namespace=self.sup.app.name)
            stored = self._store.revocations()
        except (TaskfleetError, ImportError, AttributeError) as exc:
            if not self._store_failed:
                log.warning("could not read the stored revocations; retrying", error=str(exc))
            self._store_failed = True
            if self._store is not None:  # reconnect at the next read
                with contextlib.suppress(TaskfleetError):
                    self._store.close()
                self._store = None
            return None
        self._store_failed = False
        return stored

    def revoke(self, revocations: Sequence[Revocation]) -> list[str]:
        """Honour ``revocations``: new ids go to every child; a running task revoked with terminate is terminated.
        Returns the ids terminated now."""
        new = self.sup.runtime.revoked.add((r.task_id, r.expires_at) for r in revocations)
        if new:
            wanted = set(new)
            self.send_all(events.Revoke([(t, e) for t, e in self.sup.runtime.revoked.items() if t in wanted]))
            log.info("tasks revoked", task_ids=new[:20], count=len(new))
        by_id = {r.task_id: r for r in revocations if r.terminate}
        if by_id:  # a child running one as a coroutine cancels it (taskfleet.worker.async_runner)
            self.send_all(events.CancelTasks(list(by_id)))
        terminated = []
        for rec in list(self.sup.children.values()):
            running = rec.progress.running_task() if by_id and rec.terminating is None else None
            if running is not None and running.task_id in by_id:
                self._terminate(rec, running.seq, running.task_id, running.task, running.since,
                                by_id[running.task_id])
                terminated.append(running.task_id)
        return terminated

    def _terminate(self, rec: ChildRecord, seq: int, task_id: str, task: str, since: float,
                   revocation: Revocation) -> None:
        now = time.monotonic()
        signum = signal_number(revocation.signal)
        log.warning("terminating a revoked task", task_id=task_id, task=task, slot=rec.slot, pid=rec.process.pid,
                    signal=signal.Signals(signum).name)
        rec.terminating = Termination(seq, task_id, signum, signal_at=now + _SETTLE_WAIT_S)
        rec.running = None  # its hard time limit no longer applies: it ends now
        held = rec.held.get(seq)
        self.sup.metrics.task_finished(task, held.queue if held else "?", "revoked", max(0.0, time.time() - since))
        self.sup.tally.finished(task, "revoked")
        try:
            backend = self.sup.backend
            if backend is not None and keeps_results(self.sup.app.tasks.get(task)):
                backend.store(ResultRecord(task_id=task_id, state=State.REVOKED, task=task,
                                           exc_message="terminated by a revoke"))
            rec.conn.send(events.Terminate(seq))
        except (TaskfleetError, OSError) as exc:
            log.warning("could not settle the terminated task before signalling its child", error=str(exc))
            rec.terminating.signal_at = now

    def _enforce_terminations(self, now: float) -> None:
        for rec in self.sup.children.values():
            term = rec.terminating
            if term is None:
                continue
            if not term.signal_sent and (rec.settled or now >= term.signal_at):
                if not rec.settled and rec.progress.finished >= term.seq:
                    log.info("revoked task finished before it could be terminated", task_id=term.task_id)
                    rec.terminating = None
                    continue
                term.signal_sent = True
                term.kill_at = now + self.sup.settings.terminate_grace_s
                self.sup.signal_child(rec, term.signum)
            elif term.signal_sent and not term.kill_sent and now >= term.kill_at:
                term.kill_sent = True
                log.warning("terminated task's child did not exit: killing it", slot=rec.slot, pid=rec.process.pid)
                self.sup.signal_child(rec, signal.SIGKILL)

    # -- limits, queues, pool ----------------------------------------------------------------------------------------

    def set_rate_limit(self, task: str, rate_limit: str | None) -> None:
        self._set_overrides(self.sup.runtime.limits.overrides.with_rate(task, rate_limit))

    def set_time_limits(self, task: str, soft_s: float | None, hard_s: float | None) -> None:
        self._set_overrides(self.sup.runtime.limits.overrides.with_time_limits(task, soft_s, hard_s))

    def _set_overrides(self, overrides: LimitOverrides) -> None:
        self.sup.runtime.limits.apply(overrides)  # children forked later inherit it
        self.send_all(events.Limits(overrides))

    def set_queues(self, queues: tuple[str, ...]) -> None:
        self.sup.queues = queues
        self.send_all(events.Consume(queues))

    def grow(self, n: int) -> int:
        """Add ``n`` children now; returns the pool size."""
        sup = self.sup
        sup.concurrency += n
        for _ in range(n):
            taken = set(sup.children) | set(sup.respawn_pending) | self.retiring
            sup.spawn(next(slot for slot in range(len(taken) + 1) if slot not in taken))
        return sup.concurrency

    def shrink(self, n: int) -> int:
        """Stop ``n`` children (pending respawns first, then idle ones, then the newest), keeping at least one;
        returns the pool size."""
        sup = self.sup
        n = min(n, sup.concurrency - 1)
        sup.concurrency -= n
        for slot in sorted(sup.respawn_pending, reverse=True)[:n]:
            del sup.respawn_pending[slot]
            n -= 1
        live = [rec for rec in sup.children.values() if rec.slot not in self.retiring]
        live.sort(key=lambda rec: (rec.progress.running() is not None, -rec.slot))
        for rec in live[:n]:
            self.retiring.add(rec.slot)
            sup.signal_child(rec, signal.SIGTERM)  # it finishes its running task, gives back the rest and exits
        return sup.concurrency

    def send_all(self, command: events.Command) -> None:
        for rec in self.sup.children.values():
            with contextlib.suppress(OSError):
                rec.conn.send(command)

    def close(self) -> None:
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(timeout=2)  # a read stuck on a dead broker is not waited for
        if self._store is not None:
            with contextlib.suppress(TaskfleetError):
                self._store.close()
            self._store = None
