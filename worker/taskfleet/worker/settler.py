"""The one owner of a worker child's broker calls for the messages it holds: it carries out the executor's
decisions (taskfleet.worker.executor), batches acks, gives prefetched deliveries back, renews leases and acks a
timed-out delivery on the supervisor's ``Settle`` command, and reports each of these to the supervisor.

Acks of finished deliveries (``Ack``) are batched: ``flush`` sends them, with one ``Done`` event carrying their
sequence numbers and metrics samples, when the fetched batch is done (before the next fetch), when they are
overdue (``overdue``: the background thread looks every tick while a slow task runs), before the child exits, and
when the supervisor is gone. A retried or duplicate delivery (``AckNow``) is acked at once and a dead-lettered one
moved at once; both are reported with the next ``Done``. Before the delivery's outcome counts as finished in
``Progress``, a ``Leave`` decision, or an ``AckNow`` or ``DeadLetter`` whose broker call failed, is reported
``Dropped``: the message is delivered again when its lease runs out. A prefetched delivery whose lease was lost
before it started (``drop_unrun``) is reported ``Dropped`` too, with no broker call.

Thread-safe: the main thread settles and flushes, the background thread flushes, renews, gives back and serves
``Settle``. Broker calls are made outside the lock.
"""

from __future__ import annotations

import threading
import time

from taskfleet.brokers.base import Broker, Delivery
from taskfleet.errors import BrokerError
from taskfleet.worker import events
from taskfleet.worker.events import Reporter, Sample
from taskfleet.worker.executor import Ack, AckNow, DeadLetter, Leave, Outcome
from taskfleet.worker.holdings import Held, Holdings, lease_clock
from taskfleet.worker.logging import get_logger

log = get_logger("taskfleet.worker")


class Settler:
    """Settles the live messages of one child on ``broker`` and reports to the supervisor through ``reporter``."""

    def __init__(self, broker: Broker, reporter: Reporter) -> None:
        self._broker = broker
        self._reporter = reporter
        self._lock = threading.Lock()
        self._acks: list[Delivery] = []
        self._seqs: list[int] = []
        self._samples: list[Sample] = []
        self._since: float | None = None  # when the oldest unsent one finished

    # -- the main thread: one call per finished delivery ----------------------------------------------------------

    def settle(self, held: Held, outcome: Outcome) -> bool:
        """Carry out ``outcome.decision`` for ``held``. True when it is settled (or its ack is pending in the batch),
        False when it was left to be delivered again (reported ``Dropped``)."""
        decision = outcome.decision
        delivery = held.delivery
        sample = (outcome.task, delivery.queue, outcome.outcome, outcome.runtime_s)
        if isinstance(decision, Ack):
            self._finished(held.seq, sample, delivery)
            return True
        if isinstance(decision, Leave):
            self._reporter.send(events.Dropped([held.seq]))
            return False
        try:
            if isinstance(decision, AckNow):
                self._broker.ack([delivery])  # at once: a redelivery could not tell this attempt already ran
            elif isinstance(decision, DeadLetter):
                self._broker.dead_letter(delivery, decision.reason)
        except BrokerError as exc:
            log.warning("could not finish message, it will be redelivered", message_id=delivery.message_id,
                        error=str(exc))
            self._reporter.send(events.Dropped([held.seq]))
            return False
        if isinstance(decision, DeadLetter):
            log.error("message dead-lettered", queue=delivery.queue, message_id=delivery.message_id,
                      task=outcome.task, reason=decision.reason)
        self._finished(held.seq, sample, None)
        return True

    def _finished(self, seq: int, sample: Sample, ack: Delivery | None) -> None:
        with self._lock:
            if ack is not None:
                self._acks.append(ack)
            self._seqs.append(seq)
            self._samples.append(sample)
            if self._since is None:
                self._since = time.monotonic()

    # -- either thread --------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Ack the finished deliveries and report them, with their metrics samples, in one ``Done`` event."""
        with self._lock:
            acks, seqs, samples = self._acks, self._seqs, self._samples
            self._acks, self._seqs, self._samples, self._since = [], [], [], None
        if acks:
            try:
                self._broker.ack(acks)
            except BrokerError as exc:
                log.warning("could not ack finished messages; when delivered again their stored results are found",
                            count=len(acks), error=str(exc))
        if seqs:
            self._reporter.send(events.Done(seqs, samples))

    def overdue(self, max_age_s: float) -> bool:
        """True when the oldest unsent settlement finished ``max_age_s`` ago or longer."""
        with self._lock:
            return self._since is not None and time.monotonic() - self._since >= max_age_s

    def unacked(self) -> list[Delivery]:
        """The finished deliveries whose acks are pending (their leases are renewed too)."""
        with self._lock:
            return list(self._acks)

    def renew_leases(self, holdings: Holdings) -> list[Held]:
        """Extend the leases of everything the child holds, pending acks included, and record in ``holdings`` which
        are confirmed and which lost (delivered again elsewhere). Returns those newly found lost. Raises
        ``BrokerError``, and the leases of ``holdings`` are then uncertain: a renewal that did not reach the broker
        confirms nothing."""
        held = holdings.held()
        deliveries = [h.delivery for h in held] + self.unacked()
        if not deliveries:
            return []
        sent_at = lease_clock()
        try:
            renewed = self._broker.extend(deliveries)
        except BrokerError:
            holdings.unconfirm(held)
            raise
        lost = holdings.confirm(held, renewed, at=sent_at)
        running = holdings.running()
        for h in lost:
            if running is not None and h.seq == running.seq:
                # It runs on (at-least-once allows a task that really was running to run twice); its ack will be a
                # no-op, and its stored result is found by the other delivery if that starts later.
                log.warning("lease lost while running: another worker may run this message too",
                            queue=h.delivery.queue, message_id=h.delivery.message_id,
                            delivery_count=h.delivery.delivery_count)
        return lost

    def drop_unrun(self, held: Held, *, lost: bool, error: str | None = None) -> None:
        """Give up ``held`` before it starts because its lease was ``lost`` (delivered again elsewhere: running it
        would run it twice) or could not be confirmed (``error``): no broker call (its message belongs to whoever
        holds it now, or comes back when the lease runs out), reported ``Dropped``."""
        delivery = held.delivery
        if lost:
            log.warning("lease lost: prefetched message dropped unrun", queue=delivery.queue,
                        message_id=delivery.message_id, delivery_count=delivery.delivery_count)
        else:
            log.warning("lease not confirmed: prefetched message dropped unrun, it returns when its lease runs out",
                        queue=delivery.queue, message_id=delivery.message_id,
                        delivery_count=delivery.delivery_count, error=error)
        self._reporter.send(events.Dropped([held.seq]))

    def give_back(self, holdings: Holdings, *, if_waiting_longer_than_s: float | None = None) -> None:
        """Release the unstarted deliveries of ``holdings`` (given a threshold, only while a task runs and the oldest
        of them has waited that long: ``Holdings.take_waiting``).

        They are reported ``Released`` as they are taken, before the main thread can fetch and finish later
        deliveries: a supervisor still holding them when this child dies would take them for finished
        (``Progress``) and ack them."""
        taken = holdings.take_waiting(if_waiting_longer_than_s=if_waiting_longer_than_s,
                                      on_taken=self._report_released)
        if not taken:
            return
        try:
            self._broker.release([h.delivery for h in taken])
        except BrokerError as exc:
            log.warning("could not release prefetched messages; they return when their lease expires",
                        count=len(taken), error=str(exc))

    def _report_released(self, taken: list[Held]) -> None:
        self._reporter.send(events.Released([h.seq for h in taken]))

    # -- the background thread, on the supervisor's command --------------------------------------------------------

    def settle_timed_out(self, seq: int, holdings: Holdings) -> None:
        """``Settle``: delivery ``seq``, running, is past its hard time limit and its FAILURE is stored. Ack it (the
        main thread is stuck in the task, and only this connection may settle it), together with the pending acks,
        and say so before being killed. Nothing when ``seq`` is no longer running."""
        running = holdings.running()
        if running is None or running.seq != seq:
            return
        self.flush()
        try:
            self._broker.ack([running.delivery])
        except BrokerError as exc:
            log.warning("could not ack the timed-out task; it is acked on redelivery", error=str(exc))
            return
        self._reporter.send(events.Settled(running.seq))
