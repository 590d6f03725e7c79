"""``async def`` tasks for the async worker tests, on the test tasks' app (tests/tasks.py), so a worker started with
``-A tests.async_tasks:app`` runs them and the sync test tasks on one event loop per child (docs/async.md)."""

from __future__ import annotations

import asyncio
import os
import time

from taskfleet import Task
from taskfleet.errors import SoftTimeLimitExceeded
from tests.support.ledger import append
from tests.tasks import app

__all__ = ["app", "async_add", "async_blocker", "async_flaky", "async_hard_limited", "async_nap", "async_napper",
           "async_soft_limited"]


@app.task
async def async_nap(seconds: float) -> int:
    """Awaits ``seconds`` of simulated I/O; returns the child's pid."""
    await asyncio.sleep(seconds)
    return os.getpid()


@app.task
async def async_add(x: int, y: int) -> int:
    """``x + y``, after an await: a workflow step."""
    await asyncio.sleep(0.01)
    return x + y


@app.task(bind=True)
async def async_napper(self: Task[None], path: str, seconds: float) -> None:
    """Writes ``start <task id> <pid>``, awaits ``seconds``, writes ``end <task id> <pid>``."""
    append(path, "start", self.request.id, os.getpid())
    await asyncio.sleep(seconds)
    append(path, "end", self.request.id, os.getpid())


@app.task(soft_time_limit=0.3, time_limit=5)
async def async_soft_limited() -> str:
    """Awaits far past its soft limit, catches ``SoftTimeLimitExceeded`` and returns."""
    try:
        await asyncio.sleep(10)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "slept"


@app.task(time_limit=0.5)
async def async_hard_limited() -> None:
    """Awaits far past its hard limit: cancelled, FAILURE."""
    await asyncio.sleep(10)


@app.task(bind=True, max_retries=3)
async def async_flaky(self: Task[str], path: str) -> str:
    """Fails its first attempt with a retry (writes ``try <retries>`` each time); returns ``"ok"`` on the second."""
    append(path, "try", self.request.retries)
    await asyncio.sleep(0.01)
    if self.request.retries == 0:
        self.retry(countdown=0.1)
    return "ok"


@app.task(time_limit=1)
async def async_blocker() -> None:
    """Blocks its loop far past its hard limit (a sync sleep in a coroutine): only killing the child stops it."""
    time.sleep(20)
