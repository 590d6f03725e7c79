"""Specification of the asyncio callers' API (taskfleet.async_calls): ``delay_async``/``send_async`` send what the
sync calls send, ``get_async`` returns and raises what ``get`` does, and many waits share one thread without
blocking the loop."""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from taskfleet import App, ResultTimeout, State
from taskfleet.async_calls import result_waiter
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.canvas.group_result import GroupResult
from taskfleet.message import Message


def _add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def app() -> Iterator[App]:
    """A fresh app on its own in-memory broker and result backend, with ``t.add`` registered."""
    app = App("t", broker=f"memory://{uuid.uuid4().hex}", result_backend="memory://")
    app.task(name="t.add")(_add)
    yield app
    app.close()


def _backend(app: App) -> ResultBackend:
    backend = app.backend
    assert backend is not None
    return backend


def _sent(app: App) -> list[Message]:
    deliveries = app.broker.fetch(["default"], max_messages=100, timeout_s=0)
    return [Message.decode(d.data, accept=frozenset({"json"})) for d in deliveries]


def _store_later(app: App, record: ResultRecord, delay_s: float) -> None:
    threading.Timer(delay_s, _backend(app).store, args=(record,)).start()


def test_delay_async_sends_the_same_call_as_delay(app: App) -> None:
    result = asyncio.run(app.get_task("t.add").delay_async(2, y=3))

    (message,) = _sent(app)
    assert (message.id, message.task, message.args, message.kwargs) == (result.id, "t.add", (2,), {"y": 3})


def test_send_async_takes_apply_async_options_and_app_send_async_sends_by_name(app: App) -> None:
    async def send() -> None:
        await app.get_task("t.add").send_async((1, 2), task_id="chosen", priority=7)
        await app.send_async("t.add", (3, 4), task_id="by-name")

    asyncio.run(send())

    assert [(m.id, m.args, m.priority) for m in _sent(app)] == [("chosen", (1, 2), 7), ("by-name", (3, 4), 0)]


def test_an_unknown_send_option_raises_type_error(app: App) -> None:
    with pytest.raises(TypeError):
        asyncio.run(app.send_async("t.add", (1, 2), no_such_option=1))  # type: ignore[call-arg]


def test_get_async_returns_the_value_stored_while_it_waits(app: App) -> None:
    _store_later(app, ResultRecord(task_id="t1", state=State.SUCCESS, result=42), 0.05)

    assert asyncio.run(app.AsyncResult("t1").get_async(timeout=5)) == 42


def test_get_async_raises_a_failed_tasks_exception_as_get_does(app: App) -> None:
    _backend(app).store(ResultRecord(task_id="t1", state=State.FAILURE, exc_type="builtins.ValueError",
                                     exc_message="bad amount", exc_args=["bad amount"]))

    with pytest.raises(ValueError, match="bad amount"):
        asyncio.run(app.AsyncResult("t1").get_async(timeout=5))
    returned = asyncio.run(app.AsyncResult("t1").get_async(timeout=5, propagate=False))
    assert isinstance(returned, ValueError)


def test_get_async_times_out_with_the_error_get_raises(app: App) -> None:
    with pytest.raises(ResultTimeout) as sync_error:
        app.AsyncResult("never").get(timeout=0.05)
    with pytest.raises(ResultTimeout) as async_error:
        asyncio.run(app.AsyncResult("never").get_async(timeout=0.05))

    assert str(async_error.value) == str(sync_error.value)
    assert result_waiter(app).pending_count() == 0


def test_a_cancelled_get_async_leaves_nothing_waiting(app: App) -> None:
    async def cancel_a_wait() -> None:
        wait = asyncio.create_task(app.AsyncResult("never").get_async())
        await asyncio.sleep(0.02)
        assert result_waiter(app).pending_count() == 1
        wait.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait

    asyncio.run(cancel_a_wait())

    assert result_waiter(app).pending_count() == 0


def test_many_waits_share_one_thread_and_the_loop_keeps_running(app: App) -> None:
    # Given 200 results stored 1 s after their waits start (by one thread: 200 timer threads waking at once would
    # measure the GIL, not the waits)
    ids = [f"t{i}" for i in range(200)]
    records = [ResultRecord(task_id=task_id, state=State.SUCCESS, result=task_id) for task_id in ids]
    threading.Timer(1.0, lambda: [_backend(app).store(record) for record in records]).start()
    ticks: list[float] = []
    threads_while_waiting: list[int] = []
    threads_before = threading.active_count()

    async def tick(loop: asyncio.AbstractEventLoop) -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    async def wait_all() -> list[Any]:
        ticker = asyncio.create_task(tick(asyncio.get_running_loop()))
        waits = asyncio.gather(*(app.AsyncResult(task_id).get_async(timeout=10) for task_id in ids))
        await asyncio.sleep(0.1)
        threads_while_waiting.append(threading.active_count() - threads_before)
        values = await waits
        ticker.cancel()
        return values

    # When they are all awaited at once in one loop
    values = asyncio.run(wait_all())

    # Then each gets its own value, through one waiter thread, and the loop ticked throughout: a wait that blocked
    # the loop would stop the ticker for the whole second (a loaded machine delays a tick by tens of ms)
    assert values == ids
    assert threads_while_waiting[0] <= 1  # the waiter (none when an idle one of another app just exited)
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5


def test_a_group_result_awaits_every_member_and_raises_the_first_failure_in_order(app: App) -> None:
    backend = _backend(app)
    backend.store(ResultRecord(task_id="a", state=State.SUCCESS, result=1))
    _store_later(app, ResultRecord(task_id="b", state=State.SUCCESS, result=2), 0.05)
    group = GroupResult("g", [app.AsyncResult("a"), app.AsyncResult("b")], app=app)

    assert asyncio.run(group.get_async(timeout=5)) == [1, 2]

    backend.store(ResultRecord(task_id="c", state=State.FAILURE, exc_type="builtins.KeyError", exc_args=["k"]))
    failing = GroupResult("g2", [app.AsyncResult("c"), app.AsyncResult("never")], app=app)
    with pytest.raises(KeyError):
        asyncio.run(failing.get_async(timeout=5))
    with pytest.raises(ResultTimeout, match="group g2 not ready"):
        asyncio.run(failing.get_async(timeout=0.05, propagate=False))
    assert result_waiter(app).pending_count() == 0


def test_get_many_reads_each_id_in_order(stub_or_sqlite_backend: ResultBackend) -> None:
    stub_or_sqlite_backend.store(ResultRecord(task_id="b", state=State.SUCCESS, result=2))

    records = stub_or_sqlite_backend.get_many(["a", "b", "c"])

    assert [None if r is None else r.result for r in records] == [None, 2, None]
