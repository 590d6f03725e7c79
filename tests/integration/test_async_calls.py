"""An asyncio caller (``delay_async``, ``get_async``) against a real worker on every broker (``broker_kind``), with
results on the real Redis backend (SQLite's for the SQLite broker): what FastAPI or aiohttp services rely on."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest
import redis

from taskfleet import App, ResultTimeout, signals
from taskfleet.async_calls import result_waiter
from taskfleet.backends.redis import result_key
from tests import tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for
from tests.tasks import InsufficientFunds

pytestmark = pytest.mark.integration

#: Longest the caller's loop may go without running a ready coroutine while 200 results are awaited (seconds): a
#: stall, such as connecting on the loop. A blocking publish or read per task is caught by thread, not by time: on
#: a loaded 2-core machine a 10 ms ticker is late by a quarter of a second now and then.
MAX_TICK_GAP_S = 1.0


async def _ticking(work: Any) -> tuple[Any, float]:
    """Await ``work`` while a ticker coroutine runs every 10 ms; returns its value and the longest gap seen."""
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        value = await work
    finally:
        ticker.cancel()
    ticks.append(loop.time())
    return value, max(b - a for a, b in itertools.pairwise(ticks))


def _threads_calling(monkeypatch: pytest.MonkeyPatch, target: object, names: tuple[str, ...]) -> set[int]:
    """The threads that call any of ``target``'s methods ``names`` from now on (filled in as they do)."""
    seen: set[int] = set()
    for name in names:
        original = getattr(target, name)

        def spy(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            seen.add(threading.get_ident())
            return __original(*args, **kwargs)

        monkeypatch.setattr(target, name, spy)
    return seen


def test_an_asyncio_caller_sends_and_awaits_200_tasks_while_its_loop_keeps_ticking(
        app: App, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    start_worker()
    assert app.backend is not None
    reading = _threads_calling(monkeypatch, app.backend, ("get", "get_many", "wait_any"))
    publishing: set[int] = set()

    def on_publish(sender: Any, **_: Any) -> None:
        publishing.add(threading.get_ident())

    signals.before_task_publish.connect(on_publish, weak=False)
    loop_thread: list[int] = []

    async def send_and_wait() -> list[int]:
        loop_thread.append(threading.get_ident())
        results = await asyncio.gather(*(tasks.add.delay_async(i, i) for i in range(200)))
        return await asyncio.gather(*(result.get_async(timeout=60) for result in results))

    try:
        values, longest_gap_s = asyncio.run(_ticking(send_and_wait()))
    finally:
        signals.before_task_publish.disconnect(on_publish)

    assert values == [2 * i for i in range(200)]
    assert publishing, "no publish was seen"
    assert loop_thread[0] not in publishing, "a publish ran on the caller's event loop"
    assert reading, "no read of the result backend was seen"
    assert loop_thread[0] not in reading, "a read of the result backend ran on the caller's event loop"
    assert longest_gap_s < MAX_TICK_GAP_S
    assert result_waiter(app).pending_count() == 0


def test_get_async_reraises_a_failed_tasks_own_exception(app: App, start_worker: StartWorker) -> None:
    start_worker()

    async def send_and_wait() -> None:
        result = await tasks.overdraw.delay_async(100)
        await result.get_async(timeout=30)

    with pytest.raises(InsufficientFunds, match="cannot withdraw 100"):
        asyncio.run(send_and_wait())


def test_a_timed_out_or_cancelled_get_async_leaves_nothing_waiting(app: App, backend_url: str) -> None:
    async def time_out_then_cancel() -> None:
        with pytest.raises(ResultTimeout, match=r"not ready after 0\.1s"):
            await app.AsyncResult("never-sent").get_async(timeout=0.1)
        wait = asyncio.create_task(app.AsyncResult("never-sent").get_async())
        await asyncio.sleep(0.05)
        wait.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait

    asyncio.run(time_out_then_cancel())

    assert result_waiter(app).pending_count() == 0
    if backend_url.startswith("redis"):  # and the waiter's connection unsubscribes from its channel
        probe = redis.Redis.from_url(backend_url)
        try:
            wait_for(lambda: probe.pubsub_numsub(result_key("never-sent")) == [(result_key("never-sent").encode(), 0)],
                     timeout=5)
        finally:
            probe.close()
