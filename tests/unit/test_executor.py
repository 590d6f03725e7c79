"""Specification of running one delivery (taskfleet.worker.executor) with the stub broker and stub backend,
driving the test tasks of tests/tasks.py."""

from __future__ import annotations

import dataclasses
import signal
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from taskfleet import App, Message, State, TaskRevoked
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.brokers.base import Broker, Delivery
from taskfleet.task import TaskOptions
from taskfleet.worker.executor import Executor, Outcome, Started
from tests import tasks

QUEUE = "tests"  # the default queue of tests.tasks.app

RunNext = Callable[[], Outcome]


@pytest.fixture
def memory_app() -> Iterator[App]:
    """The test tasks' App on a fresh in-memory broker and result backend; restored afterwards."""
    previous_alarm = signal.getsignal(signal.SIGALRM)  # the Executor installs its own SIGALRM handler
    tasks.app.configure(broker="memory://", result_backend="memory://")
    yield tasks.app
    tasks.app.configure(broker=None, result_backend=None)
    signal.signal(signal.SIGALRM, previous_alarm)


@pytest.fixture
def backend(memory_app: App) -> ResultBackend:
    backend = memory_app.backend
    assert backend is not None
    return backend


@pytest.fixture
def broker(memory_app: App) -> Broker:
    return memory_app.broker


@pytest.fixture
def started() -> list[Started]:
    """What the executor reported through ``on_start``."""
    return []


@pytest.fixture
def run_next(memory_app: App, started: list[Started]) -> RunNext:
    """``run_next()``: fetch the next ready delivery of the tests queue and run it through an Executor."""

    def run() -> Outcome:
        deliveries = memory_app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
        assert deliveries, "nothing ready on the tests queue"
        return _executor(memory_app, started).run(deliveries[0])

    return run


def _executor(app: App, started: list[Started], ack: Callable[[Delivery], None] | None = None) -> Executor:
    return Executor(app, app.broker, app.backend, on_start=started.append, ack=ack)


def _run_with_deferred_acks(app: App, started: list[Started]) -> tuple[Outcome, list[Delivery]]:
    """Fetch and run the next delivery with an ack callback that only collects (as a worker child's does)."""
    deferred: list[Delivery] = []
    [delivery] = app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
    return _executor(app, started, ack=deferred.append).run(delivery), deferred


def _record(backend: ResultBackend, task_id: str) -> ResultRecord:
    record = backend.get(task_id)
    assert record is not None, f"no result stored for {task_id}"
    return record


def _state(backend: ResultBackend, task_id: str) -> State | None:
    record = backend.get(task_id)
    return None if record is None else record.state


def _publish(app: App, task: str, *args: Any, retries: int = 0) -> Message:
    message = Message(id=uuid.uuid4().hex, task=task, args=args, queue=QUEUE, retries=retries)
    app.publish(message)
    return message


# -- success -----------------------------------------------------------------------------------------------------


def test_a_successful_task_stores_its_result_and_is_acked(run_next: RunNext, backend: ResultBackend,
                                                           broker: Broker) -> None:
    result = tasks.add.delay(2, 3)

    outcome = run_next()

    assert (outcome.outcome, outcome.task) == ("success", "tests.add")
    record = _record(backend, result.id)
    assert (record.state, record.result) == (State.SUCCESS, 5)
    depth = broker.queue_depth(QUEUE)
    assert (depth.ready, depth.in_flight, depth.dead) == (0, 0, 0)


def test_on_start_is_called_with_the_tasks_time_limit(
    run_next: RunNext, started: list[Started], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks.hard_limited, "fn", lambda: "quick")  # its real body sleeps 30 s
    result = tasks.hard_limited.delay()

    run_next()

    assert len(started) == 1
    assert (started[0].task_id, started[0].task, started[0].queue) == (result.id, "tests.hard_limited", QUEUE)
    assert started[0].time_limit_s == 1


def test_on_start_reports_no_time_limit_for_a_task_without_one(run_next: RunNext, started: list[Started]) -> None:
    tasks.add.delay(1, 1)

    run_next()

    assert [s.time_limit_s for s in started] == [None]


def test_a_bound_task_sees_the_workers_request(run_next: RunNext, backend: ResultBackend, marker: str) -> None:
    result = tasks.flaky.delay(marker, 0)

    run_next()

    assert _record(backend, result.id).result == "ok after 0 retries"
    assert tasks.lines(marker) == ["attempt 0"]


def test_a_task_that_tracks_starts_reads_started_while_it_runs(
    run_next: RunNext, backend: ResultBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[State | None] = []
    monkeypatch.setattr(tasks.add, "options", dataclasses.replace(tasks.add.options, track_started=True))
    monkeypatch.setattr(tasks.add, "fn", lambda x, y: seen.append(_state(backend, result.id)))
    result = tasks.add.delay(1, 2)

    run_next()

    assert seen == [State.STARTED]
    assert _record(backend, result.id).state is State.SUCCESS


def test_a_task_that_does_not_track_starts_stores_only_its_final_state(
    run_next: RunNext, backend: ResultBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[State | None] = []
    monkeypatch.setattr(tasks.add, "options", dataclasses.replace(tasks.add.options, track_started=False))
    monkeypatch.setattr(tasks.add, "fn", lambda x, y: seen.append(_state(backend, result.id)))
    result = tasks.add.delay(1, 2)

    run_next()

    assert seen == [None], "nothing stored while it ran: it reads PENDING"
    assert _record(backend, result.id).state is State.SUCCESS


def test_tasks_do_not_track_starts_unless_asked() -> None:
    assert TaskOptions(name="t").track_started is False


# -- failure -----------------------------------------------------------------------------------------------------


def test_a_task_exception_stores_failure_with_type_and_traceback_and_is_acked(
    run_next: RunNext, backend: ResultBackend, broker: Broker
) -> None:
    result = tasks.fail.delay("bad input")

    outcome = run_next()

    assert outcome.outcome == "failure"
    record = _record(backend, result.id)
    assert (record.state, record.exc_type, record.exc_message, record.exc_args) == (
        State.FAILURE, "builtins.ValueError", "bad input", ["bad input"]
    )
    assert record.traceback is not None
    assert "ValueError: bad input" in record.traceback
    depth = broker.queue_depth(QUEUE)
    assert (depth.in_flight, depth.dead) == (0, 0)


def test_a_failed_user_exception_comes_back_to_the_caller_as_its_own_type(run_next: RunNext) -> None:
    result = tasks.overdraw.delay(5)

    run_next()

    with pytest.raises(tasks.InsufficientFunds, match="cannot withdraw 5"):
        result.get(timeout=1)


# -- retry -------------------------------------------------------------------------------------------------------


def test_self_retry_publishes_a_delayed_next_attempt_and_acks_the_original(
    memory_app: App, run_next: RunNext, backend: ResultBackend, broker: Broker, marker: str
) -> None:
    result = tasks.flaky.delay(marker, 3)

    outcome = run_next()

    assert outcome.outcome == "retry"
    depth = broker.queue_depth(QUEUE)
    assert (depth.ready, depth.in_flight, depth.delayed) == (0, 0, 1)
    record = _record(backend, result.id)
    assert (record.state, record.retries, record.exc_type) == (State.RETRY, 1, "builtins.OSError")


def test_the_retried_attempt_carries_retries_plus_one_under_the_same_task_id(
    memory_app: App, run_next: RunNext, broker: Broker, marker: str
) -> None:
    result = tasks.flaky.delay(marker, 3)
    run_next()

    retried = broker.fetch([QUEUE], max_messages=1, timeout_s=2.0)  # flaky asks for a 0.2 s countdown

    assert len(retried) == 1
    assert retried[0].message_id == f"{result.id}:1"
    message = Message.decode(retried[0].data, accept=memory_app.settings.accept_content)
    assert (message.id, message.retries, message.args) == (result.id, 1, (marker, 3))


def test_an_exhausted_autoretry_stores_failure_and_dead_letters_the_message(
    memory_app: App, run_next: RunNext, backend: ResultBackend, broker: Broker, marker: str
) -> None:
    # Given the last allowed attempt of a task with autoretry_for=(OSError,), max_retries=2
    message = _publish(memory_app, "tests.always_oserror", marker, retries=2)

    # When it fails once more
    outcome = run_next()

    # Then it is not retried: FAILURE is stored and the message goes to the dead-letter list with the reason
    assert outcome.outcome == "dead_lettered"
    record = _record(backend, message.id)
    assert (record.state, record.exc_type, record.exc_message) == (State.FAILURE, "builtins.OSError", "disk on fire")
    [dead] = broker.dead_letters(QUEUE)
    assert "max retries" in dead.reason
    assert dead.message_id == message.broker_id
    depth = broker.queue_depth(QUEUE)
    assert (depth.ready, depth.in_flight, depth.delayed) == (0, 0, 0)
    assert len(tasks.lines(marker)) == 1


def test_an_autoretry_within_its_budget_is_retried(
    memory_app: App, run_next: RunNext, backend: ResultBackend, broker: Broker, marker: str
) -> None:
    message = _publish(memory_app, "tests.always_oserror", marker, retries=1)

    outcome = run_next()

    assert outcome.outcome == "retry"
    assert broker.queue_depth(QUEUE).delayed == 1
    assert _record(backend, message.id).retries == 2


# -- messages that cannot run ------------------------------------------------------------------------------------


def test_an_unknown_task_is_dead_lettered_and_stored_as_failure(
    memory_app: App, run_next: RunNext, backend: ResultBackend, broker: Broker
) -> None:
    message = _publish(memory_app, "tests.nope")

    outcome = run_next()

    assert outcome.outcome == "dead_lettered"
    [dead] = broker.dead_letters(QUEUE)
    assert "tests.nope" in dead.reason
    record = _record(backend, message.id)
    assert record.state is State.FAILURE
    assert record.exc_type is not None
    assert record.exc_type.endswith("TaskNotRegistered")
    assert broker.queue_depth(QUEUE).in_flight == 0


@pytest.mark.parametrize(
    ("data", "reason_start"),
    [
        pytest.param(b"garbage", "malformed", id="no content-type line"),
        pytest.param(b"application/json\n{oops", "malformed", id="body is not json"),
        pytest.param(b'application/json\n{"v": 1, "id": "x", "task": "tests.add"}', "malformed",
                     id="envelope without a queue"),
        pytest.param(b'application/json\n{"v": 99}', "unsupported protocol version", id="unknown version"),
        pytest.param(b"application/x-python-pickle\n\x80\x04K\x01.", "content type", id="pickle not accepted"),
    ],
)
def test_bytes_that_do_not_decode_are_dead_lettered_with_the_reason(
    memory_app: App, run_next: RunNext, broker: Broker, data: bytes, reason_start: str
) -> None:
    memory_app.broker.enqueue(QUEUE, "bad-1", data)

    outcome = run_next()

    assert outcome.outcome == "dead_lettered"
    [dead] = broker.dead_letters(QUEUE)
    assert dead.reason.startswith(reason_start)
    assert (dead.message_id, dead.data) == ("bad-1", data)
    depth = broker.queue_depth(QUEUE)
    assert (depth.ready, depth.in_flight) == (0, 0)


def test_an_oversized_message_is_dead_lettered_without_decoding(
    memory_app: App, run_next: RunNext, broker: Broker
) -> None:
    limit = memory_app.settings.max_message_bytes
    memory_app.broker.enqueue(QUEUE, "big-1", b"application/json\n" + b" " * limit)

    outcome = run_next()

    assert outcome.outcome == "dead_lettered"
    [dead] = broker.dead_letters(QUEUE)
    assert dead.reason.startswith("oversized")


def test_an_expired_message_is_revoked_acked_and_not_run(
    run_next: RunNext, backend: ResultBackend, broker: Broker, marker: str
) -> None:
    result = tasks.record.apply_async((marker, "ran"), expires=datetime(2020, 1, 1, tzinfo=UTC))

    outcome = run_next()

    assert outcome.outcome == "revoked"
    assert _record(backend, result.id).state is State.REVOKED
    assert tasks.lines(marker) == []
    depth = broker.queue_depth(QUEUE)
    assert (depth.ready, depth.in_flight, depth.dead) == (0, 0, 0)


def test_an_expired_message_raises_task_revoked_for_the_caller(run_next: RunNext) -> None:
    result = tasks.add.apply_async((1, 2), expires=-1)

    run_next()

    with pytest.raises(TaskRevoked, match="expired"):
        result.get(timeout=1)


# -- options -----------------------------------------------------------------------------------------------------


def test_an_ignore_result_task_runs_but_stores_nothing(
    run_next: RunNext, backend: ResultBackend, broker: Broker, marker: str
) -> None:
    result = tasks.fire_and_forget.delay(marker)

    outcome = run_next()

    assert outcome.outcome == "success"
    assert tasks.lines(marker) == ["ran"]
    assert backend.get(result.id) is None
    assert broker.queue_depth(QUEUE).in_flight == 0


def test_a_soft_time_limit_interrupts_the_task_so_it_can_clean_up(run_next: RunNext, backend: ResultBackend) -> None:
    result = tasks.soft_limited.delay()

    outcome = run_next()

    assert outcome.outcome == "success"
    assert _record(backend, result.id).result == "cleaned up"
    assert outcome.runtime_s < 4  # interrupted at 0.5 s, not after its 5 s sleep


def test_a_result_that_cannot_be_serialized_fails_the_task_instead_of_crashing_the_worker(
    run_next: RunNext, backend: ResultBackend, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks.add, "fn", lambda x, y: {x, y})  # a set is not JSON
    result = tasks.add.delay(1, 2)

    outcome = run_next()

    assert outcome.outcome == "failure"
    record = _record(backend, result.id)
    assert record.state is State.FAILURE
    assert (record.exc_type or "").endswith("EncodeError")
    assert broker.queue_depth(QUEUE).in_flight == 0


# -- redeliveries ------------------------------------------------------------------------------------------------


def test_a_redelivered_task_that_already_finished_is_acked_without_running_again(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker, marker: str
) -> None:
    result = tasks.record.delay(marker, "once")
    first = broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0]
    assert _executor(memory_app, started).run(first).outcome == "success"
    broker.enqueue(QUEUE, first.message_id, first.data)  # its ack was lost: the broker delivers it again
    broker.nack(broker.fetch([QUEUE], max_messages=1, timeout_s=0))

    again = broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0]
    outcome = _executor(memory_app, started).run(again)

    assert again.redelivered
    assert outcome.outcome == "duplicate"
    assert tasks.lines(marker) == ["once"]
    assert _record(backend, result.id).state == State.SUCCESS
    assert broker.queue_depth(QUEUE).total == 0


def test_a_redelivered_task_without_a_final_result_runs_again(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker, marker: str
) -> None:
    tasks.record.delay(marker, "twice")
    broker.nack(broker.fetch([QUEUE], max_messages=1, timeout_s=0))  # its worker died before it finished

    again = broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0]
    outcome = _executor(memory_app, started).run(again)

    assert again.redelivered
    assert outcome.outcome == "success"
    assert tasks.lines(marker) == ["twice"]


# -- deferred acks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("send", "outcome"),
    [
        pytest.param(lambda: tasks.add.delay(1, 2), "success", id="success"),
        pytest.param(lambda: tasks.fail.delay("no"), "failure", id="failure"),
        pytest.param(lambda: tasks.add.apply_async((1, 2), expires=-1), "revoked", id="expired"),
    ],
)
def test_an_ack_callback_receives_the_delivery_once_its_outcome_is_stored(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker,
    send: Callable[[], Any], outcome: str
) -> None:
    # Given an executor whose acks are deferred to a callback
    result = send()

    # When it runs the delivery
    ran, deferred = _run_with_deferred_acks(memory_app, started)

    # Then the outcome is stored, and the message stays in-flight until the callback's owner acks it
    assert ran.outcome == outcome
    assert _record(backend, result.id).state in {State.SUCCESS, State.FAILURE, State.REVOKED}
    assert [d.message_id for d in deferred] == [result.id]
    assert broker.queue_depth(QUEUE).in_flight == 1
    broker.ack(deferred)
    assert broker.queue_depth(QUEUE).total == 0


def test_a_redelivered_duplicate_is_acked_through_the_callback(
    memory_app: App, started: list[Started], broker: Broker, marker: str
) -> None:
    tasks.record.delay(marker, "once")
    first = broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0]
    _executor(memory_app, started).run(first)
    broker.enqueue(QUEUE, first.message_id, first.data)  # its ack was lost: the broker delivers it again
    broker.nack(broker.fetch([QUEUE], max_messages=1, timeout_s=0))

    ran, deferred = _run_with_deferred_acks(memory_app, started)

    assert (ran.outcome, [d.message_id for d in deferred]) == ("duplicate", [first.message_id])
    assert tasks.lines(marker) == ["once"]


def test_a_retry_is_acked_at_once_even_with_an_ack_callback(
    memory_app: App, started: list[Started], broker: Broker, marker: str
) -> None:
    # A stored RETRY is not final: a redelivery could not be recognised, so the ack is never deferred
    tasks.flaky.delay(marker, 3)

    ran, deferred = _run_with_deferred_acks(memory_app, started)

    assert (ran.outcome, deferred) == ("retry", [])
    depth = broker.queue_depth(QUEUE)
    assert (depth.in_flight, depth.delayed) == (0, 1)


def test_a_dead_lettered_message_needs_no_ack(memory_app: App, started: list[Started], broker: Broker) -> None:
    memory_app.broker.enqueue(QUEUE, "bad-1", b"garbage")

    ran, deferred = _run_with_deferred_acks(memory_app, started)

    assert (ran.outcome, deferred) == ("dead_lettered", [])
    assert broker.queue_depth(QUEUE).in_flight == 0
