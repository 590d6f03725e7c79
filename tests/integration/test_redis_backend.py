"""Specification of the Redis result backend against a real, private redis-server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from taskfleet.backends.base import ResultRecord
from taskfleet.backends.redis import RedisBackend
from taskfleet.errors import BrokerConnectionError, ResultTimeout
from taskfleet.settings import BackendSettings
from taskfleet.states import FAILURE, STARTED, SUCCESS
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

MakeBackend = Callable[..., RedisBackend]


@pytest.fixture
def make_backend(redis_url: str) -> Iterator[MakeBackend]:
    """Factory of backends on the test's clean server; keyword arguments override ``BackendSettings``."""
    backends: list[RedisBackend] = []

    def make(**overrides: Any) -> RedisBackend:
        backend = RedisBackend(BackendSettings(**{"url": redis_url, **overrides}))
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()


@pytest.fixture
def backend(make_backend: MakeBackend) -> RedisBackend:
    return make_backend()


def store_later(backend: RedisBackend, record: ResultRecord, delay_s: float) -> tuple[threading.Thread, list[float]]:
    """Store ``record`` from another thread after ``delay_s``; the list receives the monotonic time of the store."""
    stored_at: list[float] = []

    def store() -> None:
        time.sleep(delay_s)
        stored_at.append(time.monotonic())
        backend.store(record)

    thread = threading.Thread(target=store)
    thread.start()
    return thread, stored_at


def test_a_stored_record_is_read_back_unchanged(backend: RedisBackend) -> None:
    record = ResultRecord(task_id="t1", state=SUCCESS, task="billing.send", result={"sent": 3}, retries=1)

    backend.store(record)

    assert backend.get("t1") == record


def test_get_returns_none_for_a_task_nothing_was_stored_for(backend: RedisBackend) -> None:
    assert backend.get("unknown") is None


def test_a_later_store_replaces_the_earlier_state(backend: RedisBackend) -> None:
    backend.store(ResultRecord(task_id="t1", state=STARTED))

    backend.store(ResultRecord(task_id="t1", state=FAILURE, exc_type="builtins.ValueError", exc_message="bad"))

    stored = backend.get("t1")
    assert stored is not None
    assert (stored.state, stored.exc_type) == (FAILURE, "builtins.ValueError")


def test_wait_returns_at_once_when_the_result_is_already_stored(backend: RedisBackend) -> None:
    backend.store(ResultRecord(task_id="t1", state=SUCCESS, result=42))
    started = time.monotonic()

    record = backend.wait("t1", timeout_s=5.0)

    assert record.result == 42
    assert time.monotonic() - started < 0.1


def test_wait_is_woken_by_a_store_from_another_thread_at_once(make_backend: MakeBackend) -> None:
    waiter, worker = make_backend(), make_backend()
    thread, stored_at = store_later(worker, ResultRecord(task_id="t1", state=SUCCESS, result="done"), 0.3)

    record = waiter.wait("t1", timeout_s=5.0)
    woke_at = time.monotonic()
    thread.join()

    assert record.result == "done"
    assert woke_at - stored_at[0] < 0.1


def test_wait_keeps_waiting_through_states_that_are_not_ready(make_backend: MakeBackend) -> None:
    waiter, worker = make_backend(), make_backend()
    worker.store(ResultRecord(task_id="t1", state=STARTED))
    thread, _ = store_later(worker, ResultRecord(task_id="t1", state=SUCCESS, result=1), 0.2)

    record = waiter.wait("t1", timeout_s=5.0)
    thread.join()

    assert record.state == SUCCESS


def test_wait_raises_result_timeout_when_the_task_does_not_finish_in_time(backend: RedisBackend) -> None:
    started = time.monotonic()

    with pytest.raises(ResultTimeout, match=r"task t1 not ready after 0\.2s"):
        backend.wait("t1", timeout_s=0.2)

    assert 0.2 <= time.monotonic() - started < 0.5


def test_wait_without_a_timeout_waits_until_the_result_arrives(make_backend: MakeBackend) -> None:
    waiter, worker = make_backend(), make_backend()
    thread, _ = store_later(worker, ResultRecord(task_id="t1", state=SUCCESS, result="late"), 0.3)

    record = waiter.wait("t1", timeout_s=None)
    thread.join()

    assert record.result == "late"


def test_a_connection_used_by_a_timed_out_wait_serves_the_next_calls(backend: RedisBackend) -> None:
    with pytest.raises(ResultTimeout):
        backend.wait("t1", timeout_s=0.05)
    backend.store(ResultRecord(task_id="t2", state=SUCCESS, result=2))

    assert backend.get("t2") is not None
    assert backend.wait("t2", timeout_s=1.0).result == 2


def test_results_expire_after_result_expires_s(make_backend: MakeBackend) -> None:
    backend = make_backend(result_expires_s=0.5)
    backend.store(ResultRecord(task_id="t1", state=SUCCESS))

    assert backend.get("t1") is not None
    wait_for(lambda: backend.get("t1") is None, timeout=3.0, message="the result never expired")


def test_forget_deletes_the_stored_record(backend: RedisBackend) -> None:
    backend.store(ResultRecord(task_id="t1", state=SUCCESS))

    backend.forget("t1")

    assert backend.get("t1") is None


def test_ping_raises_broker_connection_error_while_the_server_is_down(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    backend.ping()
    redis_server.stop()

    with pytest.raises(BrokerConnectionError):
        backend.ping()


def test_the_backend_works_again_after_the_server_restarts(backend: RedisBackend, redis_server: RedisServer) -> None:
    backend.store(ResultRecord(task_id="t1", state=SUCCESS))
    redis_server.stop()
    redis_server.start()

    backend.store(ResultRecord(task_id="t2", state=SUCCESS, result=2))

    assert backend.wait("t2", timeout_s=1.0).result == 2


def clients_of_db(stats: redis.Redis, db: int) -> int:
    return sum(1 for client in stats.client_list() if int(client["db"]) == db and client["name"] != "stats")


def test_waits_one_after_another_share_one_connection(make_backend: MakeBackend, redis_url: str) -> None:
    backend = make_backend(url=redis_url.rsplit("/", 1)[0] + "/3")
    for i in range(20):
        backend.store(ResultRecord(task_id=f"t{i}", state=SUCCESS, result=i))

    results = [backend.wait(f"t{i}", timeout_s=1.0).result for i in range(20)]

    assert results == list(range(20))
    stats = redis.Redis.from_url(redis_url, client_name="stats")
    try:
        assert clients_of_db(stats, 3) == 2  # one for store and get, one for every wait
    finally:
        stats.close()


def test_a_wait_never_returns_the_record_of_the_task_its_connection_waited_for_before(
    make_backend: MakeBackend,
) -> None:
    waiter, worker = make_backend(), make_backend()
    with pytest.raises(ResultTimeout):
        waiter.wait("t1", timeout_s=0.05)  # its connection stays subscribed to t1 until the next wait
    worker.store(ResultRecord(task_id="t1", state=SUCCESS, result="for t1"))
    thread, _ = store_later(worker, ResultRecord(task_id="t2", state=SUCCESS, result="for t2"), 0.2)

    record = waiter.wait("t2", timeout_s=5.0)
    thread.join()

    assert (record.task_id, record.result) == ("t2", "for t2")


def test_waits_from_many_threads_each_get_their_own_record(make_backend: MakeBackend) -> None:
    waiter, worker = make_backend(), make_backend()
    got: dict[str, object] = {}

    def wait(task_id: str) -> None:
        got[task_id] = waiter.wait(task_id, timeout_s=5.0).result

    threads = [threading.Thread(target=wait, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    for i in reversed(range(8)):
        worker.store(ResultRecord(task_id=f"t{i}", state=SUCCESS, result=i))
    for thread in threads:
        thread.join()

    assert got == {f"t{i}": i for i in range(8)}


def test_a_started_record_is_stored_before_what_the_same_thread_stores_next(make_backend: MakeBackend) -> None:
    backend, reader = make_backend(), make_backend()

    backend.store(ResultRecord(task_id="t1", state=STARTED))  # written behind: no wait for the reply
    backend.store(ResultRecord(task_id="t2", state=SUCCESS))

    started = reader.get("t1")
    assert started is not None
    assert started.state == STARTED
    backend.store(ResultRecord(task_id="t1", state=STARTED))
    backend.store(ResultRecord(task_id="t1", state=SUCCESS, result=1))
    assert reader.wait("t1", timeout_s=1.0).result == 1


def test_a_wait_works_after_the_server_closed_the_idle_connections(
    make_backend: MakeBackend, redis_url: str
) -> None:
    backend = make_backend()
    backend.store(ResultRecord(task_id="t1", state=SUCCESS, result=1))
    backend.store(ResultRecord(task_id="t2", state=STARTED))
    assert backend.wait("t1", timeout_s=1.0).result == 1
    stats = redis.Redis.from_url(redis_url)
    try:
        stats.client_kill_filter(skipme=True, _type="normal")
        stats.client_kill_filter(skipme=True, _type="pubsub")
    finally:
        stats.close()

    backend.store(ResultRecord(task_id="t2", state=SUCCESS, result=2))

    assert backend.wait("t2", timeout_s=1.0).result == 2


# -- state updates ---------------------------------------------------------------------------------------------------


def test_every_record_stored_while_a_waiter_listens_is_pushed_to_it_once_in_order(make_backend: MakeBackend) -> None:
    worker, waiter = make_backend(), make_backend()
    worker.store(ResultRecord(task_id="t1", state="WAITING"))
    updates = waiter.updates("t1", timeout_s=5.0)
    assert next(updates).state == "WAITING"

    for done in range(1, 51):  # stored faster than the waiter reads them
        worker.store(ResultRecord(task_id="t1", state="PROGRESS", result=done))
    worker.store(ResultRecord(task_id="t1", state=SUCCESS, result="done"))

    assert [(r.state, r.result) for r in updates] == [
        *(("PROGRESS", done) for done in range(1, 51)), (SUCCESS, "done")]


def test_an_updates_iteration_given_up_midway_leaves_its_connection_ready_for_the_next_wait(
    make_backend: MakeBackend, redis_url: str
) -> None:
    backend = make_backend(url=redis_url.rsplit("/", 1)[0] + "/4")
    backend.store(ResultRecord(task_id="t1", state="PROGRESS", result=1))
    updates = backend.updates("t1", timeout_s=5.0)
    assert next(updates).result == 1
    updates.close()  # the caller stops iterating
    backend.store(ResultRecord(task_id="t1", state="PROGRESS", result=2))  # pushed to the old subscription
    backend.store(ResultRecord(task_id="t2", state=SUCCESS, result="t2"))

    assert backend.wait("t2", timeout_s=1.0).result == "t2"
    stats = redis.Redis.from_url(redis_url, client_name="stats")
    try:
        assert clients_of_db(stats, 4) == 2, "the listening connection was kept, not replaced"
    finally:
        stats.close()


def test_wait_any_reads_what_was_stored_and_is_pushed_what_is_stored_later(backend: RedisBackend) -> None:
    # Given one id already done and one whose result comes 50 ms into the wait
    wake, waker = socket.socketpair()
    backend.store(ResultRecord(task_id="done", state=SUCCESS, result=1))
    assert [r.task_id for r in backend.wait_any(["done", "later"], 5.0, wake)] == ["done"]
    thread, _ = store_later(backend, ResultRecord(task_id="later", state=SUCCESS, result=2), 0.05)

    # When the waiter waits for it with a long timeout, Then the pushed record ends the wait long before it
    began = time.monotonic()
    assert [r.result for r in backend.wait_any(["later"], 5.0, wake)] == [2]
    assert time.monotonic() - began < 2.0
    thread.join()

    # And a byte on the wake socket ends a wait with nothing ready
    waker.send(b"\0")
    began = time.monotonic()
    assert backend.wait_any(["never"], 5.0, wake) == []
    assert time.monotonic() - began < 2.0
    wake.close()
    waker.close()
