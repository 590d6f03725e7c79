"""Specification of running one delivery (taskfleet.worker.executor) with the stub broker and stub backend,
driving the test tasks of tests/tasks.py.

The executor decides and does not settle: most tests settle its decision with a ``Settler`` as a worker child does
(``run_next``) and check the broker; the "decisions" tests check what it returns and that it made no settling
broker call itself."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from taskfleet import App, Message, State, TaskRevoked
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.brokers.base import Broker, Delivery
from taskfleet.errors import BrokerConnectionError, ResultError
from taskfleet.task import TaskOptions
from taskfleet.worker import events
from taskfleet.worker.executor import ACK, ACK_NOW, DeadLetter, Executor, Leave, Outcome, Started
from taskfleet.worker.holdings import Held
from taskfleet.worker.settler import Settler
from tests import tasks

QUEUE = "tests"  # the default queue of tests.tasks.app

RunNext = Callable[[], Outcome]


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
    """``run_next()``: fetch the next ready delivery of the tests queue, run it through an Executor and settle its
    decision as a worker child does."""

    def run() -> Outcome:
        deliveries = memory_app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
        assert deliveries, "nothing ready on the tests queue"
        return _run_and_settle(memory_app, started, deliveries[0])

    return run


class _Events:
    """A reporter that keeps what a Settler sends the supervisor."""

    def __init__(self) -> None:
        self.sent: list[events.Event] = []

    def send(self, event: events.Event) -> None:
        self.sent.append(event)


def _executor(app: App, started: list[Started]) -> Executor:
    return Executor(app, app.backend, on_start=started.append)


def _settle(app: App, delivery: Delivery, outcome: Outcome, *, flush: bool = True) -> bool:
    settler = Settler(app.broker, _Events())  # type: ignore[arg-type]
    settled = settler.settle(Held(1, delivery), outcome)
    if flush:
        settler.flush()
    return settled


def _run_and_settle(app: App, started: list[Started], delivery: Delivery) -> Outcome:
    outcome = _executor(app, started).run(delivery)
    _settle(app, delivery, outcome)
    return outcome


def _run_unsettled(app: App, started: list[Started]) -> tuple[Outcome, Delivery]:
    """Fetch and run the next delivery without settling it."""
    [delivery] = app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
    return _executor(app, started).run(delivery), delivery


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
    assert _run_and_settle(memory_app, started, first).outcome == "success"
    broker.enqueue(QUEUE, first.message_id, first.data)  # its ack was lost: the broker delivers it again
    broker.nack(broker.fetch([QUEUE], max_messages=1, timeout_s=0))

    again = broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0]
    outcome = _run_and_settle(memory_app, started, again)

    assert again.redelivered
    assert (outcome.outcome, outcome.decision) == ("duplicate", ACK_NOW)
    assert tasks.lines(marker) == ["once"]
    assert _record(backend, result.id).state == State.SUCCESS
    assert broker.queue_depth(QUEUE).total == 0


def test_a_redelivered_task_without_a_final_result_runs_again(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker, marker: str
) -> None:
    tasks.record.delay(marker, "twice")
    broker.nack(broker.fetch([QUEUE], max_messages=1, timeout_s=0))  # its worker died before it finished

    again = broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0]
    outcome = _run_and_settle(memory_app, started, again)

    assert again.redelivered
    assert outcome.outcome == "success"
    assert tasks.lines(marker) == ["twice"]


def _run_then_its_copy(app: App, started: list[Started], message: Message) -> tuple[Outcome, Outcome, Delivery]:
    """Run the queued ``message``, then publish it again and run that copy: both outcomes, and the copy's delivery."""
    first = _run_and_settle(app, started, app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0])
    app.publish(message)
    copy = app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0]
    return first, _run_and_settle(app, started, copy), copy


def test_a_retry_attempt_published_twice_runs_once_the_copy_is_acked_unrun_after_its_final_state(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker, marker: str
) -> None:
    # Given a retry's attempt that ran, then its second copy (on RabbitMQ the worker's publish of it is sent again
    # when its confirm is lost: the message is stored twice), which is not a redelivery
    attempt = _publish(memory_app, "tests.flaky", marker, 1, retries=1)
    first, second, copy = _run_then_its_copy(memory_app, started, attempt)

    assert not copy.redelivered
    assert (first.outcome, second.outcome, second.decision) == ("success", "duplicate", ACK_NOW)
    assert tasks.lines(marker) == ["attempt 1"]
    assert _record(backend, attempt.id).state is State.SUCCESS
    assert broker.queue_depth(QUEUE).total == 0


def test_a_copy_of_an_attempt_that_was_already_retried_is_acked_unrun(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker, marker: str
) -> None:
    # Given attempt 1 of a task that fails twice
    attempt = _publish(memory_app, "tests.flaky", marker, 2, retries=1)

    # When it runs (and is retried: attempt 2 is published, RETRY stored) and then its second copy comes
    first, second, _ = _run_then_its_copy(memory_app, started, attempt)

    # Then the other copy is acked unrun: the stored RETRY names a later attempt, so this one already ran
    assert (first.outcome, second.outcome, second.decision) == ("retry", "duplicate", ACK_NOW)
    assert tasks.lines(marker) == ["attempt 1"]
    record = _record(backend, attempt.id)
    assert (record.state, record.retries) == (State.RETRY, 2)
    assert broker.queue_depth(QUEUE).delayed == 1, "attempt 2 only once"


# -- decisions: the executor decides, the settler settles -----------------------------------------------------


@pytest.mark.parametrize(
    ("send", "outcome"),
    [
        pytest.param(lambda: tasks.add.delay(1, 2), "success", id="success"),
        pytest.param(lambda: tasks.fail.delay("no"), "failure", id="failure"),
        pytest.param(lambda: tasks.add.apply_async((1, 2), expires=-1), "revoked", id="expired"),
    ],
)
def test_a_stored_final_outcome_is_decided_ack_and_left_in_flight_for_the_settler(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker,
    send: Callable[[], Any], outcome: str
) -> None:
    # Given a task message
    result = send()

    # When the executor runs it
    ran, delivery = _run_unsettled(memory_app, started)

    # Then the outcome is stored and the decision is to ack, and the message stays in-flight until it is settled
    assert (ran.outcome, ran.decision) == (outcome, ACK)
    assert _record(backend, result.id).state in {State.SUCCESS, State.FAILURE, State.REVOKED}
    assert broker.queue_depth(QUEUE).in_flight == 1
    broker.ack([delivery])
    assert broker.queue_depth(QUEUE).total == 0


def test_a_redelivered_duplicate_is_decided_an_ack_at_once_without_running(
    memory_app: App, started: list[Started], broker: Broker, marker: str
) -> None:
    # Not batched: a poison message later in its batch that kills the child would otherwise have it delivered and
    # counted again each time, until it is dead-lettered though it succeeded
    tasks.record.delay(marker, "once")
    first = broker.fetch([QUEUE], max_messages=1, timeout_s=0)[0]
    _run_and_settle(memory_app, started, first)
    broker.enqueue(QUEUE, first.message_id, first.data)  # its ack was lost: the broker delivers it again
    broker.nack(broker.fetch([QUEUE], max_messages=1, timeout_s=0))

    ran, delivery = _run_unsettled(memory_app, started)

    assert (ran.outcome, ran.decision, delivery.message_id) == ("duplicate", ACK_NOW, first.message_id)
    assert broker.queue_depth(QUEUE).in_flight == 1, "not acked by the executor"
    assert tasks.lines(marker) == ["once"]
    assert _settle(memory_app, delivery, ran, flush=False)
    assert broker.queue_depth(QUEUE).in_flight == 0, "acked at once, with no flush of the batch"


def test_a_retry_publishes_and_stores_the_next_attempt_before_deciding_an_ack_that_is_never_deferred(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker, marker: str
) -> None:
    # A stored RETRY is not final: a redelivery could not be recognised, so the ack is never deferred
    result = tasks.flaky.delay(marker, 3)

    ran, delivery = _run_unsettled(memory_app, started)

    # The next attempt is published and stored while the original is still in flight: publish before ack
    assert (ran.outcome, ran.decision) == ("retry", ACK_NOW)
    depth = broker.queue_depth(QUEUE)
    assert (depth.in_flight, depth.delayed) == (1, 1)
    assert _record(backend, result.id).state is State.RETRY
    # Settled, it is acked at once, with no flush of the batch
    assert _settle(memory_app, delivery, ran, flush=False)
    depth = broker.queue_depth(QUEUE)
    assert (depth.in_flight, depth.delayed) == (0, 1)


def test_a_message_that_cannot_run_is_decided_dead_letter_with_the_reason(
    memory_app: App, started: list[Started], broker: Broker
) -> None:
    memory_app.broker.enqueue(QUEUE, "bad-1", b"garbage")

    ran, delivery = _run_unsettled(memory_app, started)

    assert ran.outcome == "dead_lettered"
    assert isinstance(ran.decision, DeadLetter)
    assert ran.decision.reason.startswith("malformed")
    assert (broker.queue_depth(QUEUE).in_flight, broker.dead_letters(QUEUE)) == (1, []), "not moved by the executor"
    assert _settle(memory_app, delivery, ran)
    [dead] = broker.dead_letters(QUEUE)
    assert dead.reason == ran.decision.reason
    assert broker.queue_depth(QUEUE).in_flight == 0, "a dead-lettered message needs no ack"


def test_a_result_backend_error_leaves_the_message_for_redelivery(
    memory_app: App, started: list[Started], backend: ResultBackend, broker: Broker,
    monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    def down(record: ResultRecord) -> None:
        raise ResultError("backend down")

    monkeypatch.setattr(backend, "store", down)
    tasks.record.delay(marker, "ran")

    ran, delivery = _run_unsettled(memory_app, started)

    assert (ran.outcome, ran.decision) == ("dropped", Leave("backend down"))
    assert tasks.lines(marker) == ["ran"]
    assert not _settle(memory_app, delivery, ran)
    assert broker.queue_depth(QUEUE).in_flight == 1, "delivered again when its lease runs out"


def test_a_broker_error_while_publishing_a_retry_leaves_the_message_for_redelivery(
    memory_app: App, started: list[Started], broker: Broker, monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    def down(message: Message) -> None:
        raise BrokerConnectionError("broker down")

    tasks.flaky.delay(marker, 3)
    monkeypatch.setattr(memory_app, "publish", down)

    ran, _ = _run_unsettled(memory_app, started)

    assert ran.decision == Leave("broker down")
    depth = broker.queue_depth(QUEUE)
    assert (depth.in_flight, depth.delayed) == (1, 0)
