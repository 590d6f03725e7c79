"""Taskfleet's benchmark tasks. Workers import this module as ``taskfleet_app`` with bench/apps as their extra
import path."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from io_work import DONE_KEY, IO_S

from taskfleet import App

QUEUE = "bench"

#: Broker and result backend come from the worker's --broker/--result-backend and the runner's ``configure``.
app = App("bench", default_queue=QUEUE)


@app.task(ignore_result=True)
def noop() -> None:
    return None


@app.task(ignore_result=True)
def payload(blob: str) -> None:
    return None


@app.task
def noop_result() -> None:
    return None


@app.task
def add_one(x: int) -> int:
    """A chain step: its parent's result plus one."""
    return x + 1


@app.task
def count(results: list[object]) -> int:
    """A chord body: how many header results it got."""
    return len(results)


#: One redis.asyncio client per event loop of this process (a client belongs to the loop it was made on).
_counters: dict[int, Any] = {}


@app.task(ignore_result=True)
async def io_sleep() -> None:
    """The async scenario: 100 ms of simulated I/O, then one INCR of the finish counter (``BENCH_COUNTER_URL``)."""
    await asyncio.sleep(IO_S)
    loop_id = id(asyncio.get_running_loop())
    client = _counters.get(loop_id)
    if client is None:
        import redis.asyncio

        # A few connections shared by the loop's coroutines (they wait for one), as the peers' threads share theirs.
        pool = redis.asyncio.BlockingConnectionPool.from_url(os.environ["BENCH_COUNTER_URL"], max_connections=8)
        client = _counters[loop_id] = redis.asyncio.Redis(connection_pool=pool)
    await client.incr(DONE_KEY)
