"""How far a worker child got through its deliveries, in memory it shares with its supervisor.

The child writes, the supervisor reads when the child dies: which of the deliveries it still holds were finished
(their acks may be pending), which one was running and which never started (taskfleet.worker.supervisor
``sort_leftovers``).
"""

from __future__ import annotations

import mmap
import struct

_MARK = struct.Struct("q")  # one sequence number in Progress


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
        self._marks = mmap.mmap(-1, 2 * _MARK.size)

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
