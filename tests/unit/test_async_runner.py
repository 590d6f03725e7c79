"""The event loop of an async worker child (taskfleet.worker.async_runner): a coroutine body's result and errors,
its soft and hard time limits, and its cancellation by a revoke with terminate."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from taskfleet import App
from taskfleet.brokers.base import Delivery
from taskfleet.errors import SoftTimeLimitExceeded, TimeLimitExceeded
from taskfleet.worker.async_runner import AsyncRunner, Terminated, is_async_task
from taskfleet.worker.holdings import Holdings

_where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="outside")


def run(runner: AsyncRunner, coro: Coroutine[Any, Any, Any], *, task_id: str = "t1", soft_limit_s: float | None = None,
        hard_limit_s: float | None = None) -> Any:
    return runner.loop.run_until_complete(runner.run_body(task_id, coro, soft_limit_s=soft_limit_s,
                                                          hard_limit_s=hard_limit_s))


@pytest.fixture
def runner() -> Any:
    r = AsyncRunner(4)
    yield r
    r.close()


def test_a_body_returns_its_value_and_sees_the_context_it_was_started_in(runner: AsyncRunner) -> None:
    async def body() -> str:
        await asyncio.sleep(0)
        return _where.get()

    async def start() -> str:
        _where.set("request")
        return await runner.run_body("t1", body(), soft_limit_s=None, hard_limit_s=None)

    assert runner.loop.run_until_complete(start()) == "request"
    assert runner.running() == 0


def test_a_body_that_raises_raises_the_same_exception(runner: AsyncRunner) -> None:
    async def body() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run(runner, body())


def test_the_soft_limit_raises_soft_time_limit_exceeded_at_the_await_and_the_body_may_return(
        runner: AsyncRunner) -> None:
    async def body() -> str:
        try:
            await asyncio.sleep(5)
        except SoftTimeLimitExceeded:
            await asyncio.sleep(0.01)  # still usable after the soft limit: the cancel request was withdrawn
            return "cleaned up"
        return "slept"

    began = time.monotonic()
    assert run(runner, body(), soft_limit_s=0.05, hard_limit_s=2) == "cleaned up"
    assert time.monotonic() - began < 1


def test_an_uncaught_soft_limit_fails_the_body_with_it(runner: AsyncRunner) -> None:
    with pytest.raises(SoftTimeLimitExceeded):
        run(runner, asyncio.sleep(5), soft_limit_s=0.05)


def test_the_hard_limit_cancels_the_body_and_raises_time_limit_exceeded(runner: AsyncRunner) -> None:
    cancelled = []

    async def body() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    began = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        run(runner, body(), hard_limit_s=0.05)
    assert cancelled == [True]
    assert time.monotonic() - began < 1


def test_cancel_from_another_thread_terminates_only_that_body(runner: AsyncRunner) -> None:
    async def both() -> list[Any]:
        doomed = runner.run_body("doomed", asyncio.sleep(5), soft_limit_s=None, hard_limit_s=None)
        kept = runner.run_body("kept", asyncio.sleep(0.2, result="kept"), soft_limit_s=None, hard_limit_s=None)
        threading.Timer(0.05, runner.cancel, args=(["doomed", "unknown"],)).start()
        return await asyncio.gather(doomed, kept, return_exceptions=True)

    doomed, kept = runner.loop.run_until_complete(both())
    assert isinstance(doomed, Terminated)
    assert kept == "kept"


def test_many_bodies_wait_at_once_on_one_loop(runner: AsyncRunner) -> None:
    async def many() -> list[int]:
        return await asyncio.gather(*(runner.run_body(f"t{i}", asyncio.sleep(0.2, result=i), soft_limit_s=None,
                                                      hard_limit_s=None) for i in range(200)))

    began = time.monotonic()
    assert runner.loop.run_until_complete(many()) == list(range(200))
    assert time.monotonic() - began < 2  # not 200 x 0.2 s


def test_a_task_is_async_when_its_function_is_a_coroutine_function() -> None:
    app = App("async-detect")

    @app.task
    async def coro() -> None: ...

    @app.task
    def plain() -> None: ...

    assert is_async_task(coro)
    assert not is_async_task(plain)
    assert not is_async_task(None)


def test_the_finished_watermark_stays_below_every_delivery_still_in_progress() -> None:
    # Given four deliveries, three started at once
    holdings = Holdings()
    holdings.add([Delivery("q", f"m{i}", b"", 1) for i in range(1, 5)])
    one, two, three = (holdings.start_concurrent() for _ in range(3))
    assert one is not None
    assert two is not None
    assert three is not None
    # When the second and third finish first
    assert holdings.finish_concurrent(two.seq) == 0
    assert holdings.finish_concurrent(three.seq) == 0
    # Then nothing counts as finished until the first does, and the unstarted fourth stays above the watermark
    assert holdings.finish_concurrent(one.seq) == 3
    assert [h.seq for h in holdings.held()] == [4]


def test_the_executor_hands_async_tasks_to_its_coroutine_runner_and_runs_sync_ones_itself(memory_app: App) -> None:
    from taskfleet.worker.async_execution import run_async_task
    from taskfleet.worker.executor import Executor
    from taskfleet.worker.outcomes import Admitted, Outcome
    from tests import async_tasks, tasks

    runner = AsyncRunner(4)
    handed: list[str] = []

    def run_coroutine(admitted: Admitted) -> Outcome:
        handed.append(admitted.message.task)
        return runner.loop.run_until_complete(run_async_task(executor, runner, admitted))

    executor = Executor(memory_app, memory_app.backend, on_start=lambda started: None, run_coroutine=run_coroutine)
    # Given an async task and a sync one queued
    awaited, called = async_tasks.async_add.delay(2, 3), tasks.add.delay(4, 5)
    # When the executor runs both deliveries
    outcomes = [executor.run(d) for d in memory_app.broker.fetch(["tests"], max_messages=2, timeout_s=0)]
    runner.close()
    # Then the async one went through the coroutine runner, the sync one did not, and both results are stored
    assert [o.outcome for o in outcomes] == ["success", "success"]
    assert handed == [async_tasks.async_add.name]
    assert awaited.get(timeout=1) == 5
    assert called.get(timeout=1) == 9
