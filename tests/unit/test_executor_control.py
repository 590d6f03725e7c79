"""Specification of what the control commands change in running one delivery (taskfleet.worker.executor with a
``RuntimeState``): a revoked task is not run, a task over its rate limit is deferred for its slot instead of held,
and runtime time limits override the task's options."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from taskfleet import App, Message, State, TaskRevoked
from taskfleet.worker import events
from taskfleet.worker.executor import ACK, ACK_NOW, Executor, Outcome, Started
from taskfleet.worker.holdings import Held
from taskfleet.worker.rate_gate import RATE_SLOT_HEADER
from taskfleet.worker.rate_limiter import LocalRateLimiter
from taskfleet.worker.runtime_state import RuntimeState
from taskfleet.worker.settler import Settler
from taskfleet.worker.task_limits import LimitOverrides, TaskLimits
from tests import tasks

QUEUE = "tests"


class _Events:
    def __init__(self) -> None:
        self.sent: list[events.Event] = []

    def send(self, event: events.Event) -> None:
        self.sent.append(event)


def run_next(app: App, runtime: RuntimeState, started: list[Started] | None = None, queue: str = QUEUE) -> Outcome:
    [delivery] = app.broker.fetch([queue], max_messages=1, timeout_s=0)
    outcome = Executor(app, app.backend, on_start=(started if started is not None else []).append,
                       runtime=runtime).run(delivery)
    settler = Settler(app.broker, _Events())  # type: ignore[arg-type]
    settler.settle(Held(1, delivery), outcome)
    settler.flush()
    return outcome


def revoked(*task_ids: str) -> RuntimeState:
    runtime = RuntimeState()
    runtime.revoked.add((task_id, time.time() + 60) for task_id in task_ids)
    return runtime


def test_a_revoked_task_is_not_run_its_revoked_state_is_stored_and_it_is_acked(memory_app: App, marker: str) -> None:
    result = tasks.record.delay(marker, "ran")

    outcome = run_next(memory_app, revoked(result.id))

    assert (outcome.decision, outcome.outcome) == (ACK, "revoked")
    assert tasks.lines(marker) == []
    assert result.state is State.REVOKED
    with pytest.raises(TaskRevoked):
        result.get(timeout=1)
    depth = memory_app.broker.queue_depth(QUEUE)
    assert (depth.ready, depth.in_flight, depth.dead) == (0, 0, 0)


def test_other_tasks_run_as_usual(memory_app: App) -> None:
    result = tasks.add.delay(1, 2)
    run_next(memory_app, revoked("someone-else"))
    assert result.get(timeout=1) == 3


def test_a_revoked_step_of_a_workflow_sends_its_failure_follow_ups(memory_app: App) -> None:
    # Given a task with an errback, revoked before it runs
    result = tasks.add.s(1, 2).apply_async(link_error=tasks.record.si("unused", "errback"))
    # When it is delivered
    outcome = run_next(memory_app, revoked(result.id))
    # Then it is revoked and its errback is queued
    assert outcome.outcome == "revoked"
    assert memory_app.broker.queue_depth(QUEUE).ready == 1


def test_a_task_over_its_rate_limit_is_published_again_for_its_slot_and_acked_at_once(memory_app: App) -> None:
    runtime = RuntimeState(limits=TaskLimits(LimitOverrides(rates={tasks.add.name: "2/s"})),
                           rate_limiter=LocalRateLimiter(multiprocessing.get_context("fork").Lock()))
    first, second = tasks.add.delay(1, 1), tasks.add.delay(2, 2)

    assert run_next(memory_app, runtime).outcome == "success"
    deferred = run_next(memory_app, runtime)

    assert (deferred.decision, deferred.outcome) == (ACK_NOW, "deferred")
    assert first.get(timeout=1) == 2
    assert second.state is State.PENDING  # not a retry: no RETRY stored
    depth = memory_app.broker.queue_depth(QUEUE)
    assert (depth.ready, depth.in_flight, depth.delayed) == (0, 0, 1)
    # When its slot comes, the same task id comes back, not counted as a retry, holding its slot: it runs.
    time.sleep(0.6)
    [again] = memory_app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
    message = Message.decode(again.data, accept=memory_app.settings.accept_content)
    assert (message.id, message.retries) == (second.id, 0)
    assert message.headers[RATE_SLOT_HEADER] == pytest.approx(time.time(), abs=0.5)
    memory_app.broker.release([again])
    assert run_next(memory_app, runtime).outcome == "success"
    assert second.get(timeout=1) == 4


def test_a_rate_limit_of_one_task_does_not_hold_back_another(memory_app: App) -> None:
    runtime = RuntimeState(limits=TaskLimits(LimitOverrides(rates={tasks.add.name: "1/m"})),
                           rate_limiter=LocalRateLimiter(multiprocessing.get_context("fork").Lock()))
    tasks.add.delay(1, 1), tasks.add.delay(2, 2)
    other = tasks.pid.delay()
    outcomes = [run_next(memory_app, runtime).outcome for _ in range(3)]
    assert outcomes == ["success", "deferred", "success"]
    assert other.get(timeout=1) > 0


def test_the_task_option_is_the_rate_limit_without_an_override_and_none_removes_it() -> None:
    limits = TaskLimits()
    options = tasks.add.options
    assert limits.rate("x", options) is None
    limits.apply(LimitOverrides(rates={"x": "10/m"}))
    assert limits.rate("x", options) is not None
    limits.apply(LimitOverrides(rates={"x": None}))
    assert limits.rate("x", options) is None


def test_runtime_time_limits_override_the_tasks_options(memory_app: App) -> None:
    runtime = RuntimeState(limits=TaskLimits(LimitOverrides(time_limits={tasks.add.name: (None, 7.0)})))
    started: list[Started] = []
    tasks.add.delay(1, 1)
    run_next(memory_app, runtime, started)
    assert started[0].time_limit_s == 7.0
