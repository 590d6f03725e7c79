"""Specification of what a worker sends after a task of a workflow finished (taskfleet.worker.followups, driven by
taskfleet.worker.executor) with the stub broker and stub backend: a worker's run is one ``Executor.run`` and the
settling of its decision, so a crash is a delivery run without settling it and delivered again."""

from __future__ import annotations

import time
from typing import Any

import pytest

from taskfleet import (
    App,
    ChordError,
    ConfigurationError,
    GroupResult,
    Message,
    State,
    TimeLimitExceeded,
    chain,
    chord,
    group,
)
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.brokers.base import Broker, Delivery
from taskfleet.errors import ResultError
from taskfleet.worker.executor import ACK_NOW, DeadLetter, Executor, Leave, Outcome
from taskfleet.worker.holdings import Held
from taskfleet.worker.settler import Settler
from tests import canvas_tasks as ct
from tests import tasks

QUEUE = "tests"


@pytest.fixture
def backend(memory_app: App) -> ResultBackend:
    assert memory_app.backend is not None
    return memory_app.backend


@pytest.fixture
def broker(memory_app: App) -> Broker:
    return memory_app.broker


class _Events:
    def send(self, event: object) -> None:
        pass


def _fetch(app: App) -> Delivery | None:
    found = app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
    return found[0] if found else None


def _run(app: App, delivery: Delivery, *, settle: bool = True) -> Outcome:
    outcome = Executor(app, app.backend, on_start=lambda started: None).run(delivery)
    if settle:
        settler = Settler(app.broker, _Events())  # type: ignore[arg-type]
        settler.settle(Held(1, delivery), outcome)
        settler.flush()
    return outcome


def _drain(app: App) -> list[Outcome]:
    """Run every ready message, follow-ups included, until none is left."""
    outcomes = []
    while (delivery := _fetch(app)) is not None:
        outcomes.append(_run(app, delivery))
    return outcomes


def _crash_after_running(app: App) -> Delivery:
    """Run the next message but die before settling it: the broker delivers it again."""
    delivery = _fetch(app)
    assert delivery is not None
    _run(app, delivery, settle=False)
    app.broker.nack([delivery])
    again = _fetch(app)
    assert again is not None
    assert again.redelivered
    return again


class _CountingReads:
    """Counts ``backend.get`` calls."""

    def __init__(self, backend: ResultBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = backend.get

        def counted(task_id: str) -> Any:
            self.count += 1
            return real(task_id)

        monkeypatch.setattr(backend, "get", counted)


# -- chains ------------------------------------------------------------------------------------------------------


def test_each_chain_step_gets_the_previous_result_and_the_result_links_back_through_parents(
        memory_app: App) -> None:
    result = chain(tasks.add.s(2, 2), ct.mul.s(3), tasks.add.s(1)).delay()

    outcomes = _drain(memory_app)

    assert [o.outcome for o in outcomes] == ["success"] * 3
    assert result.get(timeout=1) == 13
    assert result.parent is not None
    assert result.parent.get(timeout=1) == 12
    assert result.parent.parent is not None
    assert result.parent.parent.get(timeout=1) == 4


def test_a_plain_task_costs_no_backend_read_and_a_follow_up_one(memory_app: App, backend: ResultBackend,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _CountingReads(backend, monkeypatch)
    tasks.add.delay(1, 1)
    _drain(memory_app)
    assert reads.count == 0

    chain(tasks.add.s(1, 1), tasks.add.s(1)).delay()
    _drain(memory_app)
    assert reads.count == 1, "the second step, a follow-up, checks once whether it already ran"


def test_a_failed_step_stops_the_chain_stores_its_failure_for_every_later_step_and_runs_the_errback_once(
        memory_app: App, marker: str) -> None:
    result = chain(tasks.add.s(1, 1), ct.boom.s(), tasks.add.s(5), ct.mul.s(2)).link_error(
        ct.note_failure.s(marker)).delay()

    outcomes = _drain(memory_app)

    assert [o.task for o in outcomes] == ["tests.add", "tests.boom", "tests.note_failure"]
    with pytest.raises(ValueError, match=r"boom \[2\]"):
        result.get(timeout=1)
    assert result.parent is not None
    assert result.parent.state is State.FAILURE
    assert tasks.lines(marker) == ["tests.boom builtins.ValueError boom [2]"]


def test_an_errback_gets_the_failed_requests_exception_and_traceback_in_front_of_its_arguments(
        memory_app: App) -> None:
    ct.boom.s(7).set(task_id="the-failed-one").link_error(ct.echo.s("mine").set(task_id="errback")).delay()

    _drain(memory_app)

    request, exc, traceback, own = memory_app.AsyncResult("errback").get(timeout=1)
    assert {k: request[k] for k in ("id", "task", "args", "kwargs", "retries", "queue")} == {
        "id": "the-failed-one", "task": "tests.boom", "args": [7], "kwargs": {}, "retries": 0, "queue": QUEUE}
    assert exc == {"type": "builtins.ValueError", "message": "boom [7]", "args": ["boom [7]"]}
    assert "ValueError: boom [7]" in traceback
    assert own == "mine"


def test_a_callback_gets_the_result_after_a_success_and_not_after_a_failure(memory_app: App, marker: str) -> None:
    tasks.add.apply_async((20, 22), link=ct.note.s(marker))
    ct.boom.apply_async((1,), link=ct.note.s(marker))

    _drain(memory_app)

    assert tasks.lines(marker) == ["42"]


# -- crashes and duplicates --------------------------------------------------------------------------------------


def test_a_redelivered_step_whose_result_is_stored_sends_its_follow_ups_again_with_the_same_ids(
        memory_app: App, broker: Broker) -> None:
    result = chain(tasks.add.s(1, 1), ct.echo.s("after")).delay()
    delivery = _fetch(memory_app)
    assert delivery is not None
    _run(memory_app, delivery, settle=False)  # ran, stored, sent the next step; then the worker died
    broker.nack([delivery])
    again = _fetch(memory_app)
    assert again is not None
    assert again.message_id == delivery.message_id, "the first step comes back first"

    outcome = _run(memory_app, again)

    assert outcome.outcome == "duplicate"
    assert [o.outcome for o in _drain(memory_app)] == ["success"], "the next step was sent twice under one id"
    assert result.get(timeout=1) == [2, "after"]


def test_a_follow_up_whose_task_already_finished_is_acked_without_running_again(
        memory_app: App, broker: Broker) -> None:
    result = chain(tasks.add.s(1, 1), tasks.add.s(1)).delay()
    first = _fetch(memory_app)
    assert first is not None
    _run(memory_app, first, settle=False)
    _drain(memory_app)  # the second step ran
    broker.nack([first])
    redelivered = _fetch(memory_app)
    assert redelivered is not None
    _run(memory_app, redelivered)  # sends the second step again

    duplicate = _drain(memory_app)

    assert [(o.outcome, o.decision) for o in duplicate] == [("duplicate", ACK_NOW)]
    assert result.get(timeout=1) == 3


# -- chords ------------------------------------------------------------------------------------------------------


def test_a_chord_sends_its_body_once_with_the_header_results_in_header_order(memory_app: App,
                                                                            broker: Broker) -> None:
    result = chord([tasks.add.s(i, i) for i in range(4)], ct.collect.s()).delay()
    headers = [d for d in (_fetch(memory_app) for _ in range(4)) if d is not None]

    for delivery in reversed(headers):  # finished in the opposite order
        _run(memory_app, delivery)
    body = _drain(memory_app)

    assert [o.task for o in body] == ["tests.collect"]
    assert result.get(timeout=1) == [0, 2, 4, 6]
    assert isinstance(result.parent, GroupResult)
    assert result.parent.get(timeout=1) == [0, 2, 4, 6]


def test_a_header_task_that_finishes_twice_is_counted_once(memory_app: App) -> None:
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], ct.collect.s()).delay()
    again = _crash_after_running(memory_app)  # header 0: ran and reported, then its worker died

    assert _run(memory_app, again).outcome == "duplicate"
    assert [o.task for o in _drain(memory_app)] == ["tests.add", "tests.collect"]
    assert result.get(timeout=1) == [2, 4]


def test_the_part_that_fired_fires_again_after_a_crash_and_the_body_still_runs_once(
        memory_app: App, backend: ResultBackend, monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    result = chord([tasks.add.s(1, 1)], ct.body_once.s(marker)).delay()
    real_fired = backend.chord_fired

    def crash(chord_id: str) -> None:
        raise ResultError("the worker died after sending the body, before marking the firing done")

    monkeypatch.setattr(backend, "chord_fired", crash)
    header = _fetch(memory_app)
    assert header is not None
    assert isinstance(_run(memory_app, header).decision, Leave)
    monkeypatch.setattr(backend, "chord_fired", real_fired)
    memory_app.broker.nack([header])  # its lease runs out
    _drain(memory_app)

    assert result.get(timeout=1) == 1
    assert len(tasks.lines(marker)) == 1


def test_a_failed_header_task_fails_the_chord_with_chord_error_naming_it_and_runs_the_errback_once(
        memory_app: App, marker: str) -> None:
    failing = ct.boom.s().set(task_id="bad-part")
    result = chord([tasks.add.s(1, 1), failing, ct.boom.s()], ct.collect.s()).link_error(
        ct.note_failure.s(marker)).delay()

    ran = [o.task for o in _drain(memory_app)]

    assert "tests.collect" not in ran
    with pytest.raises(ChordError, match=r"tests\.boom\[bad-part\] failed: builtins\.ValueError"):
        result.get(timeout=1)
    [line] = tasks.lines(marker)
    assert line.startswith("tests.collect taskfleet.errors.ChordError chord ")


def test_a_header_task_that_ignores_results_still_reports_to_the_join(memory_app: App) -> None:
    result = chord([ct.add_quietly.s(1, 1), tasks.add.s(2, 2)], ct.collect.s()).delay()

    _drain(memory_app)

    assert result.get(timeout=1) == [2, 4]


def test_an_empty_chord_runs_its_body_with_an_empty_list(memory_app: App) -> None:
    result = chord([], ct.collect.s()).delay()
    _drain(memory_app)
    assert result.get(timeout=1) == []


def test_a_chord_header_chain_reports_with_its_last_task_and_a_nested_chord_with_its_body(memory_app: App) -> None:
    result = chord([chain(tasks.add.s(1, 1), ct.mul.s(10)), chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], ct.tsum.s()),
                    tasks.add.s(3, 3)], ct.collect.s()).delay()

    _drain(memory_app)

    assert result.get(timeout=1) == [20, 6, 6]


def test_a_failure_inside_a_nested_chord_fails_the_outer_chord(memory_app: App) -> None:
    result = chord([chord([ct.boom.s()], ct.tsum.s()), tasks.add.s(1, 1)], ct.collect.s()).delay()

    _drain(memory_app)

    with pytest.raises(ChordError, match="ChordError"):
        result.get(timeout=1)


def test_sending_a_chord_without_a_result_backend_is_a_configuration_error_naming_the_fix() -> None:
    app = App("no-backend", broker="memory://")
    step = app.task(name="x.step")(lambda: None)
    with pytest.raises(ConfigurationError, match="result_backend="):
        chord([step.s()], step.s()).delay()
    with pytest.raises(ConfigurationError, match="result_backend="):
        chain(step.s(), group(step.s(), step.s()), step.s()).delay()


# -- groups, maps, bad input ---------------------------------------------------------------------------------------


def test_a_group_result_is_in_group_order_and_can_be_saved_and_restored(memory_app: App) -> None:
    result = group(tasks.add.s(i, i) for i in range(3)).delay()
    assert isinstance(result, GroupResult)
    result.save()
    _drain(memory_app)

    restored = GroupResult.restore(result.id, app=memory_app)
    assert restored is not None
    assert restored.get(timeout=1) == [0, 2, 4]
    assert (restored.ready(), restored.successful(), restored.failed(), restored.completed_count()) == (
        True, True, False, 3)


def test_map_starmap_and_chunks_run_the_task_over_their_items(memory_app: App) -> None:
    mapped = ct.tsum.map([[1, 2], [3]]).delay()
    starmapped = tasks.add.starmap([(1, 2), (3, 4)]).delay()
    chunked = tasks.add.chunks([(i, i) for i in range(5)], 2).delay()

    _drain(memory_app)

    assert mapped.get(timeout=1) == [3, 3]
    assert starmapped.get(timeout=1) == [3, 7]
    assert chunked.get(timeout=1) == [[0, 2], [4, 6], [8]]


def test_malformed_workflow_data_is_dead_lettered_with_the_reason_and_its_failure_stored(
        memory_app: App, broker: Broker, backend: ResultBackend) -> None:
    memory_app.publish(Message(id="bad-workflow", task="tests.add", args=(1, 1), queue=QUEUE,
                               workflow={"chain": "not a list"}))

    [outcome] = _drain(memory_app)

    assert isinstance(outcome.decision, DeadLetter)
    assert "malformed workflow" in outcome.decision.reason
    record = backend.get("bad-workflow")
    assert record is not None
    assert record.state is State.FAILURE
    assert broker.queue_depth(QUEUE).dead == 1


def test_an_expired_chain_step_stops_the_chain(memory_app: App) -> None:
    result = chain(tasks.add.s(1, 1).set(expires=0.001), tasks.add.s(1)).delay()
    time.sleep(0.01)
    outcomes = _drain(memory_app)

    assert [o.outcome for o in outcomes] == ["revoked"]
    assert result.state is State.REVOKED


def test_a_task_killed_at_its_hard_time_limit_has_its_failure_follow_ups_sent_before_its_ack(
        memory_app: App, backend: ResultBackend, marker: str) -> None:
    result = chain(tasks.add.s(1, 1), tasks.add.s(1)).link_error(ct.note_failure.s(marker)).delay()
    delivery = _fetch(memory_app)
    assert delivery is not None
    first_id = result.parent.id if result.parent is not None else ""
    backend.store(ResultRecord(task_id=first_id, state=State.FAILURE, task="tests.add",
                               exc_type="taskfleet.errors.TimeLimitExceeded", exc_message="too slow"))

    Executor(memory_app, backend, on_start=lambda started: None).follow_up_timed_out(delivery)

    with pytest.raises(TimeLimitExceeded, match="too slow"):
        result.get(timeout=1)
    _drain_except(memory_app, delivery.message_id)
    assert tasks.lines(marker) == ["tests.add taskfleet.errors.TimeLimitExceeded too slow"]


def _drain_except(app: App, message_id: str) -> None:
    """Run every ready message but ``message_id`` (still held by its stuck task)."""
    while (delivery := _fetch(app)) is not None:
        if delivery.message_id != message_id:
            _run(app, delivery)
