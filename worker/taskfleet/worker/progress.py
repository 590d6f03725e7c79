"""How far a worker child got through its deliveries, in memory it shares with its supervisor.

The child writes, the supervisor reads when the child dies: which of the deliveries it still holds were finished
(their acks may be pending), which one was running and which never started (``sort_leftovers``).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from taskfleet.brokers.base import Delivery

_MARK = struct.Struct("q")  # one sequence number in Progress
#: What the running task is, beside the marks: its delivery's sequence number, when it started (Unix seconds), and
#: its task id and name (UTF-8, cut to their fields' sizes).
_TASK = struct.Struct("qd128s256s")
_TASK_AT = 2 * _MARK.size


@dataclass(frozen=True, slots=True)
class RunningTask:
    """The task a child is running, as its supervisor reads it (heartbeats, ``inspect active``, terminate)."""

    seq: int
    task_id: str
    task: str
    since: float  # Unix seconds


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
        self._marks = mmap.mmap(-1, _TASK_AT + _TASK.size)

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

    def describe(self, seq: int, task_id: str, task: str, since: float) -> None:
        """Record which task delivery ``seq`` runs (the child, as the task body is about to start)."""
        _TASK.pack_into(self._marks, _TASK_AT, 0, since, task_id.encode()[:128], task.encode()[:256])
        _MARK.pack_into(self._marks, _TASK_AT, seq)  # last: a reader never takes half a description for seq

    def running_task(self) -> RunningTask | None:
        """The task running now, when the child has described it (None when idle, or between the start of a
        delivery and the start of its task body)."""
        running = self.running()
        if running is None:
            return None
        seq, since, task_id, task = _TASK.unpack_from(self._marks, _TASK_AT)
        if seq != running or _MARK.unpack_from(self._marks, _TASK_AT)[0] != running:
            return None
        return RunningTask(seq=seq, task_id=task_id.rstrip(b"\0").decode(errors="replace"),
                           task=task.rstrip(b"\0").decode(errors="replace"), since=since)


@dataclass(frozen=True)
class Leftovers:
    """What a dead child still held, by what must become of it."""

    finished: list[Delivery]  # outcome stored (a timed-out task's FAILURE by the supervisor), ack pending: ack
    interrupted: list[Delivery]  # running when it died: back to the queue, the delivery counted
    unstarted: list[Delivery]  # prefetched: back to the queue, not counted


def sort_leftovers(held: Mapping[int, Delivery], *, finished_upto: int, running: int | None,
                   timed_out: int | None) -> Leftovers:
    """Sort a dead child's ``held`` deliveries (by sequence number) from its ``Progress``: every one up to
    ``finished_upto`` is finished, ``running`` was interrupted unless it is ``timed_out`` (finished: its FAILURE is
    stored), and the rest never started."""
    left = Leftovers([], [], [])
    for seq, delivery in held.items():
        if seq <= finished_upto or seq == timed_out:
            left.finished.append(delivery)
        elif seq == running:
            left.interrupted.append(delivery)
        else:
            left.unstarted.append(delivery)
    return left
