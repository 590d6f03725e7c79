"""The async scenario's work unit, shared by every system's bench app and by bench/async_io.py: ``IO_S`` of
simulated I/O, then one INCR of ``DONE_KEY`` on the run's result Redis (``BENCH_COUNTER_URL``). Standard library and
redis-py only, so it imports on Taskfleet's and on the peers' venvs alike."""

from __future__ import annotations

import os
import time
from typing import Any

#: Simulated I/O per task, seconds.
IO_S = 0.1
#: The Redis key every finished task increments.
DONE_KEY = "bench:async:done"

_counter: Any = None


def blocking_io_then_count() -> None:
    """The peers' form (Celery prefork, Dramatiq threads run I/O as a blocking call): sleep ``IO_S``, then count the
    finish with one client per worker process, made on first use."""
    global _counter
    time.sleep(IO_S)
    if _counter is None:
        import redis

        _counter = redis.Redis.from_url(os.environ["BENCH_COUNTER_URL"])
    _counter.incr(DONE_KEY)
