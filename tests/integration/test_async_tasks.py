"""``async def`` tasks in a real worker on every broker (``broker_kind``): many at once in one child, their time
limits, retries, revoke with terminate, results, and sync tasks beside them (docs/async.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from taskfleet import App, State, chain
from taskfleet.errors import TimeLimitExceeded
from tests import async_tasks, tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ASYNC_APP = "tests.async_tasks:app"


def test_one_child_runs_two_hundred_awaiting_tasks_at_once(app: App, start_worker: StartWorker) -> None:
    # Given a worker with one child (and its default async concurrency, 256)
    start_worker(app=ASYNC_APP, concurrency=1)
    assert async_tasks.async_nap.delay(0).get(timeout=15) > 0  # up and fetching
    # When 200 tasks that each await 0.5 s are sent
    began = time.monotonic()
    results = [async_tasks.async_nap.delay(0.5) for _ in range(200)]
    # Then they all succeed, in far less than the 100 s they would take one at a time
    pids = {r.get(timeout=40) for r in results}
    elapsed_s = time.monotonic() - began
    assert len(pids) == 1
    assert elapsed_s < 30, f"200 x 0.5 s took {elapsed_s:.1f} s: not concurrent"


def test_limits_retries_sync_tasks_and_terminate_behave_as_for_sync_tasks(
        app: App, start_worker: StartWorker, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    start_worker(app=ASYNC_APP, concurrency=1)
    # Given a coroutine that will run for a minute, and async tasks with limits and a retry beside it
    long = async_tasks.async_napper.delay(ledger, 60)
    soft = async_tasks.async_soft_limited.delay()
    hard = async_tasks.async_hard_limited.delay()
    flaky = async_tasks.async_flaky.delay(ledger)
    # Then a sync task runs in the same child meanwhile, and a chain of an async step and a sync one
    assert tasks.add.delay(2, 3).get(timeout=15) == 5
    assert chain(async_tasks.async_add.s(1, 2), tasks.add.s(10)).apply_async().get(timeout=15) == 13
    # And the soft limit is raised into its coroutine, which cleans up and returns
    assert soft.get(timeout=15) == "cleaned up"
    # And the hard limit cancels its coroutine: FAILURE with TimeLimitExceeded, the child lives on
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=15)
    # And the retry ran a second attempt
    assert flaky.get(timeout=15) == "ok"
    wait_for(lambda: any(line.split()[0] == "start" for line in tasks.lines(ledger)), 15,
             message="the long coroutine did not start")
    # When the long one is revoked with terminate
    app.control.revoke(long.id, terminate=True)
    # Then its coroutine is cancelled: REVOKED, never finished, and the same child serves on
    wait_for(lambda: long.state is State.REVOKED, 15, message="the terminated coroutine did not end REVOKED")
    assert async_tasks.async_nap.delay(0).get(timeout=15) > 0
    assert sorted(line.split()[0] for line in tasks.lines(ledger)) == ["start", "try", "try"]
    # And its message was acked, not left to be delivered again (RabbitMQ's management API counts a few s late)
    wait_for(lambda: (app.broker.queue_depth("tests").ready, app.broker.queue_depth("tests").in_flight) == (0, 0),
             15, message="messages left behind")
    assert "end" not in [line.split()[0] for line in tasks.lines(ledger)]


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"], indirect=True)
def test_a_coroutine_blocking_the_loop_past_its_hard_limit_gets_its_child_killed_and_nothing_is_lost(
        app: App, start_worker: StartWorker, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    worker = start_worker(app=ASYNC_APP, concurrency=1)
    # Given a coroutine awaiting beside one that blocks the loop (a sync sleep) past its 1 s hard limit
    napping = async_tasks.async_napper.delay(ledger, 0.5)
    wait_for(lambda: tasks.lines(ledger) != [], 15, message="the napping coroutine did not start")
    blocker = async_tasks.async_blocker.delay()
    # Then the supervisor kills the child: the blocker FAILS with TimeLimitExceeded and is not run again
    with pytest.raises(TimeLimitExceeded):
        blocker.get(timeout=20)
    # And the other coroutine, interrupted with its child, is delivered again and finishes
    napping.get(timeout=20)
    assert "end" in [line.split()[0] for line in tasks.lines(ledger)]
    assert async_tasks.async_nap.delay(0).get(timeout=15) > 0
    assert any("cannot be cancelled" in str(line.get("event")) for line in worker.logs())
    wait_for(lambda: (app.broker.queue_depth("tests").ready, app.broker.queue_depth("tests").in_flight) == (0, 0),
             15, message="messages left behind")


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
def test_a_child_never_runs_more_coroutines_at_once_than_its_async_concurrency(
        app: App, start_worker: StartWorker, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    # Given a worker whose one child may run 5 coroutines at once
    start_worker(app=ASYNC_APP, concurrency=1, extra=["--async-concurrency", "5"])
    # When 20 tasks that each await 0.3 s are sent
    results = [async_tasks.async_napper.delay(ledger, 0.3) for _ in range(20)]
    for result in results:
        result.get(timeout=30)
    # Then at most 5 ran at any moment, and 5 did at some moment
    running, most = 0, 0
    for line in tasks.lines(ledger):
        running += 1 if line.split()[0] == "start" else -1
        most = max(most, running)
    assert most == 5
