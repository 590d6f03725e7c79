"""What the supervisor makes of a child that has exited: why it ended (``exit_reason``, logged when it is news) and
what becomes of the messages it held (``give_back``).

The reasons: ``time_limit`` (killed past a hard time limit), ``revoked`` (killed by a terminate), ``max_tasks`` and
``max_memory`` (recycled), ``crashed`` (anything else: respawned with a backoff when it dies young), each counted by
``taskfleet_child_restarts_total``, and ``stopped`` (a clean stop or a drain), which is not.
"""

from __future__ import annotations

from taskfleet.brokers.base import Broker
from taskfleet.errors import TaskfleetError
from taskfleet.worker.child_record import ChildRecord, settled_by_supervisor
from taskfleet.worker.logging import get_logger
from taskfleet.worker.progress import sort_leftovers

log = get_logger("taskfleet.worker")


def exit_reason(rec: ChildRecord, *, draining: bool) -> str:
    """Why the child of ``rec`` ended; an unexpected death is logged at ERROR, a recycle or a terminate at INFO."""
    code = rec.process.exitcode
    if rec.killed_for is not None:
        return "time_limit"
    if rec.terminating is not None and rec.terminating.signal_sent:
        log.info("child replaced after terminating a revoked task", slot=rec.slot, pid=rec.process.pid,
                 task_id=rec.terminating.task_id)
        return "revoked"
    if rec.exit_reason in ("max_tasks", "max_memory"):
        log.info("child recycled", slot=rec.slot, reason=rec.exit_reason, pid=rec.process.pid)
        return rec.exit_reason
    if rec.exit_reason == "stopped" and code == 0:
        return "stopped"
    if draining and rec.killed_in_drain:
        return "stopped"
    log.error("child died unexpectedly; its messages are given back", slot=rec.slot, pid=rec.process.pid,
              exitcode=code, held=len(rec.held))
    return "crashed"


def give_back(broker: Broker, rec: ChildRecord) -> None:
    """Settle what a dead child held: what it finished (its acks were pending) and a timed-out task (its FAILURE
    is stored) are acked, the interrupted task goes back counted (uncounted when a drain killed it), the unstarted
    ones uncounted, and so do the deliveries left unread in its connection (pushed after its last read: it never
    reported them). A broker error is logged: those messages return when their leases expire."""
    known = {d.message_id for d in rec.held.values()}
    unread = [d for d in broker.unread_deliveries(rec.sockets.unread()) if d.message_id not in known]
    if not rec.held and not unread:
        return
    left = sort_leftovers(rec.held, finished_upto=rec.progress.finished, running=rec.progress.running(),
                          timed_out=settled_by_supervisor(rec))
    if unread:
        log.info("deliveries the dead child never read are given back uncounted", slot=rec.slot, count=len(unread))
        left.unstarted.extend(unread)
    try:
        if left.finished:
            # Redis and SQLite ack from here; on brokers that cannot settle another connection's delivery the
            # redelivery finds the stored final state and is acked unrun (an ignore_result task runs again).
            broker.ack(left.finished)
        if left.interrupted and rec.killed_in_drain:
            broker.release(left.interrupted)
        elif left.interrupted:
            broker.nack(left.interrupted)
        if left.unstarted:
            broker.release(left.unstarted)
    except TaskfleetError as exc:
        log.warning("could not give messages back; they return when their leases expire", error=str(exc))
