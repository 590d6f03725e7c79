"""The main loop of a worker child that has met an ``async def`` task: up to ``async_concurrency`` deliveries in
progress at once on the child's event loop (taskfleet.worker.async_runner), instead of one at a time
(taskfleet.worker.child's loop). A child starts in that sync loop and runs no event loop at all until its first
async task (``Child._run_coroutine``), which this loop then starts first; from then on, for the rest of its life,
it runs this loop.
So a worker whose app has async tasks but is sent only sync ones behaves, and costs, exactly as before.

Each delivery is checked as in a sync child (its lease, then ``Executor.admit``: revoked, expired, duplicate, rate
limit). An ``async def`` task then runs as an asyncio task of its own (taskfleet.worker.async_execution), and the
loop goes on to the next delivery; a sync task runs inline, blocking the loop (and so every coroutine of this
child) while it runs, exactly as in a sync child: its soft limit by SIGALRM, its hard limit and a terminate by the
supervisor, which sees it as the running task (``Holdings.run_inline``). That is the simplest design that keeps
every guarantee of sync tasks unchanged; a worker that mixes long sync tasks with async ones should give them
separate queues and workers (docs/async.md).

The child fetches up to ``async_concurrency`` messages at a time (the same count each time: on RabbitMQ it is the
consumer's prefetch, which a change would re-declare), when nothing waits and at least an eighth of its capacity is
free, so a child holds at most about twice ``async_concurrency`` deliveries. Acks are batched as in a sync child:
``Settler.flush`` after each wake-up of the loop, and by the background thread when overdue. A finish wakes the
loop ``SETTLE_BATCH_S`` later (unless few deliveries are left running), so the finishes of those milliseconds share
one ack call, one ``Done`` event and one fetch: an ack still goes out only after its coroutine finished.

Finished deliveries are reported to ``Progress`` as a watermark: every delivery up to it is settled or no longer
held (``Holdings.finish_concurrent``), so the supervisor of a child killed with coroutines in flight acks only
those, and gives back the rest to run again (at-least-once: a finished one's redelivery finds its stored result).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from taskfleet.brokers.base import Broker
from taskfleet.errors import BrokerError, ResultError
from taskfleet.worker import events
from taskfleet.worker.async_execution import run_async_task
from taskfleet.worker.async_runner import AsyncRunner, is_async_task
from taskfleet.worker.executor import Executor
from taskfleet.worker.holdings import Held, lease_clock
from taskfleet.worker.logging import get_logger
from taskfleet.worker.outcomes import Admitted, Outcome
from taskfleet.worker.settler import Settler

if TYPE_CHECKING:
    from taskfleet.worker.child import Child

log = get_logger("taskfleet.worker")

#: A coroutine still running this long (seconds) after its hard limit cancelled it cannot be stopped from the loop:
#: the supervisor is told, and kills the child as it does a sync task past its hard limit (``report_stuck``).
STUCK_GRACE_S = 1.0
#: While coroutines run and no delivery waits, the loop wakes at least this often (seconds) to fetch more: the
#: latency a new message may wait for a free slot, and a broker poll per wake-up when the queues are empty.
BUSY_POLL_S = 0.02
#: After a delivery finishes, the loop waits this long (seconds) for others to finish before it flushes their acks
#: and fetches more, so that one ack call and one fetch serve many deliveries (unless few are left running).
SETTLE_BATCH_S = 0.005


class AsyncChildLoop:
    """Serves ``child``'s deliveries with up to ``runner.concurrency`` in progress. ``run`` returns the exit
    reason, as ``Child._loop`` does."""

    def __init__(self, child: Child, broker: Broker, executor: Executor, settler: Settler,
                 runner: AsyncRunner, *, done: int = 0, first: tuple[Held, Admitted] | None = None) -> None:
        self.child = child
        self.broker = broker
        self.executor = executor
        self.settler = settler
        self.runner = runner
        self._active: set[asyncio.Task[None]] = set()
        #: Set when an active delivery finishes: what ``_next_finished`` waits on (one future, not a callback on
        #: each of hundreds of tasks per wake-up as ``asyncio.wait`` would add).
        self._finished_one: asyncio.Future[None] | None = None
        self._wake_pending = False  # a wake-up of ``_finished_one`` is scheduled (``SETTLE_BATCH_S``)
        self._done = done  # tasks this child finished (max_tasks_per_child)
        #: The async deliveries running, by task id (for ``report_stuck``).
        self._bodies: dict[str, tuple[Held, str]] = {}
        self._stuck_reported = False
        self._first = first  # admitted by the sync loop, in progress: started first

    def run(self) -> str:
        return self.runner.loop.run_until_complete(self._serve())

    async def _serve(self) -> str:
        child, settings = self.child, self.child.settings
        capacity = self.runner.concurrency
        backoff_s = 0.1
        reason: str | None = None
        if self._first is not None:
            self._start_async(*self._first)
            self._first = None
        while True:
            if child.stopping or reason is not None:
                if not self._active:
                    return reason or "stopped"
                await self._next_finished(None)
                self.settler.flush()
                continue
            self.settler.flush()
            free = capacity - len(self._active)
            if not child.holdings.waiting() and (not self._active or free >= max(1, capacity // 8)):
                try:
                    self._fetch(capacity, settings.poll_timeout_s if not self._active else 0.0)
                    backoff_s = 0.1
                except BrokerError as exc:
                    log.warning("broker unreachable, retrying", error=str(exc), retry_in_s=backoff_s)
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, 5.0)
                    continue
            child._take_buffered(self.broker, read_socket=False)  # reported before a task can take the child down
            while len(self._active) < capacity and not child.stopping:
                held = child.holdings.start_concurrent()
                if held is None:
                    break
                self._start(held)
            if self._active:
                await self._next_finished(BUSY_POLL_S)
            else:
                await asyncio.sleep(0)
            reason = self._recycle_reason()

    async def _next_finished(self, timeout_s: float | None) -> None:
        """Until an active delivery finishes, or ``timeout_s`` (None: no limit)."""
        loop = self.runner.loop
        waiter = self._finished_one = loop.create_future()
        self._wake_pending = False
        timer = loop.call_later(timeout_s, _resolve, waiter) if timeout_s is not None else None
        try:
            await waiter
        finally:
            self._finished_one = None
            if timer is not None:
                timer.cancel()

    def _on_finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        waiter = self._finished_one
        if waiter is None or self._wake_pending:
            return
        if len(self._active) < max(1, self.runner.concurrency // 8):  # nearly idle: no reason to wait for more
            _resolve(waiter)
            return
        # One wake-up per ``SETTLE_BATCH_S`` at most, not one per finish: each costs a flush (an ack call and a
        # ``Done`` event) and perhaps a fetch, which then carry the batch's deliveries at once.
        self._wake_pending = True
        self.runner.loop.call_later(SETTLE_BATCH_S, _resolve, waiter)

    def _fetch(self, max_messages: int, timeout_s: float) -> None:
        child = self.child
        with child._intake:
            if child.holdings.waiting():
                return
            batch = self.broker.fetch(child.queues, max_messages=max_messages, timeout_s=timeout_s)
            child.holdings.add(batch, confirmed_at=lease_clock(), on_added=child._report_fetched)

    def _start(self, held: Held) -> None:
        """Start ``held``: an async task as an asyncio task of its own, anything else to its end here."""
        child = self.child
        if not child._lease_held(self.broker, self.settler, held):
            self._finished(held)
            return
        child.progress.start(held.seq)
        began = time.perf_counter()
        try:
            admitted = self.executor.admit(held.delivery, began)
        except (BrokerError, ResultError) as exc:
            self._settle(held, self.executor.left(held.delivery, exc, began))
            return
        if isinstance(admitted, Outcome):  # not run: revoked, expired, a duplicate, deferred, bad input
            self._settle(held, admitted)
            return
        if is_async_task(admitted.task):
            self._start_async(held, admitted)
            return
        child.holdings.run_inline(held)
        try:
            outcome = self.executor.execute(admitted)
        except (BrokerError, ResultError) as exc:
            outcome = self.executor.left(held.delivery, exc, began)
        finally:
            if child.output is not None:
                child.output.end_task()
            # No longer the task the supervisor may terminate, though coroutines started before it still run.
            child.progress.describe(0, "", "", 0.0)
        self._settle(held, outcome)

    def _start_async(self, held: Held, admitted: Admitted) -> None:
        self._bodies[admitted.message.id] = (held, admitted.message.task)
        task = self.runner.loop.create_task(self._run_async(held, run_async_task(self.executor, self.runner,
                                                                                  admitted)))
        self._active.add(task)
        task.add_done_callback(self._on_finished)

    async def _run_async(self, held: Held, running: Coroutine[Any, Any, Outcome]) -> None:
        try:
            outcome = await running
        finally:
            self._bodies.pop(held.delivery.message_id, None)
        self._settle(held, outcome)

    def _settle(self, held: Held, outcome: Outcome) -> None:
        child = self.child
        settled = self.settler.settle(held, outcome)
        if child._events is not None and settled:
            child._events.finished(held.delivery, outcome)
        self._finished(held)
        if settled:
            self._done += 1
        if child._start_reported:
            child._start_reported = False
            child.reporter.send(events.Finished(held.seq))

    def _finished(self, held: Held) -> None:
        # After the settler reported a dropped delivery: the supervisor acks what is at or below the watermark.
        watermark = self.child.holdings.finish_concurrent(held.seq)
        if watermark > self.child.progress.finished:
            self.child.progress.finish(watermark)

    def report_stuck(self) -> None:
        """The background thread, every tick: a coroutine past its hard limit by ``STUCK_GRACE_S`` is reported to
        the supervisor as a task past its hard limit (``Started`` with no time left), which stores its FAILURE and
        kills the child; its message is then acked (or, on RabbitMQ, recognised by the FAILURE when it comes back)
        and every other delivery of the child goes back to the queue (at-least-once). Once per child; not while a
        sync task runs inline (the supervisor watches that one, and it is what blocks the loop)."""
        if self._stuck_reported or self.child.holdings.running() is not None:
            return
        for task_id in self.runner.overdue(STUCK_GRACE_S):
            entry = self._bodies.get(task_id)
            if entry is None:
                continue
            held, task = entry
            log.error("a coroutine runs past its hard time limit and cannot be cancelled (a blocking call in an "
                      "async task?): the child is killed", task_id=task_id, task=task, seq=held.seq)
            self._stuck_reported = True
            self.child.reporter.send(events.Started(held.seq, held.delivery.message_id, held.delivery.queue,
                                                    task_id, task, 0.0))
            return

    def _recycle_reason(self) -> str | None:
        """``max_tasks`` or ``max_memory`` when this child is due to be replaced (it finishes what runs first)."""
        from taskfleet.worker.child import rss_mb

        settings = self.child.settings
        if settings.max_tasks_per_child and self._done >= settings.max_tasks_per_child:
            return "max_tasks"
        if settings.max_memory_per_child_mb and rss_mb() > settings.max_memory_per_child_mb:
            return "max_memory"
        return None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
