"""A worker child's background thread: what the child does while its main thread runs a task.

Every ``TICK_S`` it exits the process if the supervisor is gone (its messages return when their leases expire, or
with its connection), takes in deliveries the broker has already pushed to the child's connection
(``Child._take_buffered``), renews the leases of everything the child holds (so a healthy long task is never
delivered twice), sends acks overdue by ``ACK_DELAY_MAX_S``, gives unstarted prefetched messages back once they have
waited ``prefetch_release_s`` behind running tasks, sends the task events collected (``-E``) every
``EVENTS_FLUSH_S``, a heartbeat every ``HEARTBEAT_INTERVAL_S``, and serves the supervisor's commands.

The commands: ``Settle`` (a hard time limit), the control commands' ``Revoke``, ``Limits`` and ``Consume`` (into the
child's ``RuntimeState`` and queues), ``CancelTasks`` (coroutines revoked with terminate: cancelled, the child lives)
and ``Terminate``: the running task was revoked with terminate; its delivery is acked and the signal that follows
ends the task (``TaskTerminated``, raised in it by the SIGTERM handler) and the child, instead of draining as a
plain SIGTERM does.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from taskfleet.brokers.base import Broker
from taskfleet.errors import BrokerError
from taskfleet.worker import events
from taskfleet.worker.logging import get_logger
from taskfleet.worker.settler import Settler

if TYPE_CHECKING:
    from taskfleet.worker.child import Child

log = get_logger("taskfleet.worker")

HEARTBEAT_INTERVAL_S = 1.0
#: A finished delivery's ack waits at most about this long (plus one tick) for the rest of its batch: a slow task
#: after fast ones does not hold their acks back.
ACK_DELAY_MAX_S = 0.05
TICK_S = 0.05
#: Task events (``-E``) collected by the hooks go out at most this often, in one broker call: a live view stays live,
#: and a broker that writes each call as a transaction (SQLite) pays for few of them.
EVENTS_FLUSH_S = 0.25


class ChildThread:
    """The background thread of ``child`` (module notes): ``run`` is its target, until ``child``'s thread stop is
    set."""

    def __init__(self, child: Child, broker: Broker, settler: Settler) -> None:
        self.child = child
        self.broker = broker
        self.settler = settler

    def run(self) -> None:
        child, broker, settler = self.child, self.broker, self.settler
        extend_every_s = max(0.3, broker.settings.visibility_timeout_s / 3)
        now = time.monotonic()
        next_extend, next_beat, next_events = now + extend_every_s, now, now + EVENTS_FLUSH_S
        while not child._thread_stop.wait(TICK_S):
            if os.getppid() != child.parent_pid:
                log.error("supervisor is gone; child exits, its messages return when their leases expire")
                settler.flush()
                os._exit(1)
            now = time.monotonic()
            try:
                child._take_buffered(broker)
                if now >= next_extend:
                    settler.renew_leases(child.holdings)
                    next_extend = now + extend_every_s
                if settler.overdue(ACK_DELAY_MAX_S):
                    settler.flush()
                settler.give_back(child.holdings, if_waiting_longer_than_s=child.settings.prefetch_release_s)
            except BrokerError as exc:
                log.warning("lease renewal failed", error=str(exc))
            if child._events is not None and now >= next_events:
                child._events.flush()  # one broker call for what was collected; failures are the sink's
                next_events = now + EVENTS_FLUSH_S
            if now >= next_beat:
                child.reporter.send(events.BEAT)
                next_beat = now + HEARTBEAT_INTERVAL_S
            self._serve_commands()
            if child._watch_loop is not None:
                child._watch_loop()

    def _serve_commands(self) -> None:
        """Commands from the supervisor (module notes)."""
        child = self.child
        try:
            while child.conn.poll():
                match child.conn.recv():
                    case events.Settle(seq):
                        self._settle_running(seq)
                    case events.Terminate(seq):
                        if child.progress.running() == seq:
                            child._terminating = seq  # before the ack: the signal may follow it at once
                            self._settle_running(seq)
                    case events.Revoke(items):
                        child.runtime.revoked.add(items)
                    case events.CancelTasks(task_ids) if child._async is not None:
                        child._async.cancel(task_ids)  # coroutines revoked with terminate: cancelled, child lives
                    case events.Limits(overrides):
                        child.runtime.limits.apply(overrides)
                    case events.Consume(queues):
                        child.queues = queues
        except (EOFError, OSError):
            return  # the supervisor is gone; the orphan check ends this process

    def _settle_running(self, seq: int) -> None:
        """Ack running delivery ``seq``, whose final state the supervisor stored (a hard time limit's FAILURE, a
        terminate's REVOKED), after its workflow's follow-ups (see ``Settler.settle_timed_out``)."""
        child = self.child
        running = child.holdings.running()
        executor = child._executor
        if executor is not None and running is not None and running.seq == seq:
            executor.follow_up_timed_out(running.delivery)  # a workflow's follow-ups go first
        elif executor is not None and child._watch_loop is not None:  # a coroutine the loop could not stop
            for held in child.holdings.held():
                if held.seq == seq:  # its follow-ups; the supervisor acks it when the child is gone
                    executor.follow_up_timed_out(held.delivery)
        task = child.progress.running_task()
        if child._events is not None and running is not None and task is not None and task.seq == seq:
            child._events.killed(running.delivery, task, terminated=child._terminating == seq)
        self.settler.settle_timed_out(seq, child.holdings)
