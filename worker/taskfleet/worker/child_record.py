"""The supervisor's record of one child process: what it holds, what it runs under a hard time limit, and how it is
being stopped (a hard time limit, a terminate, a drain)."""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from taskfleet.brokers.base import Delivery
from taskfleet.worker.broker_sockets import BrokerSockets
from taskfleet.worker.progress import Progress
from taskfleet.worker.steering import Termination


@dataclass
class Running:
    """A task with a hard time limit that a child is executing."""

    seq: int  # the delivery's number in its child (see taskfleet.worker.holdings.Held)
    message_id: str
    queue: str
    task_id: str
    task: str
    started: float
    deadline: float | None


@dataclass
class ChildRecord:
    """The supervisor's view of one child process."""

    slot: int
    process: BaseProcess
    conn: Connection
    progress: Progress
    spawned: float
    last_beat: float
    sockets: BrokerSockets  # the child's broker connections, kept open until a dead child's deliveries are given back
    held: dict[int, Delivery] = field(default_factory=dict)  # seq -> what the child leased and has not settled
    running: Running | None = None  # only tasks with a hard time limit are reported as they start
    exit_reason: str | None = None
    killed_for: Running | None = None  # set when the supervisor killed it for a hard time limit
    kill_at: float = 0.0  # when to SIGKILL a child past its hard time limit, settled or not
    settled: bool = False  # the child acked its timed-out message itself
    kill_sent: bool = False
    stop_sent: bool = False  # SIGTERM sent for a drain (a child forked as it began gets its own at the next tick)
    killed_in_drain: bool = False
    terminating: Termination | None = None  # its running task was revoked with terminate (taskfleet.worker.steering)


def settled_by_supervisor(rec: ChildRecord) -> int | None:
    """The running delivery whose final state the supervisor stored (a hard time limit's FAILURE, a terminate's
    REVOKED): finished, never delivered again."""
    if rec.killed_for is not None:
        return rec.killed_for.seq
    return rec.terminating.seq if rec.terminating is not None else None


def forget(rec: ChildRecord, seqs: list[int]) -> None:
    """The child no longer holds these deliveries (settled, released or dropped)."""
    for seq in seqs:
        rec.held.pop(seq, None)
