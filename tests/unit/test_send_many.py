"""Specification of ``App.send_many`` (taskfleet.app, taskfleet.producer) against the in-memory broker: what each
call is sent with, how the batch reaches the broker, and what happens when part of it cannot be sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from taskfleet import App, AsyncResult, EncodeError, MessageTooLarge, producer
from taskfleet.brokers.base import Broker, Outgoing
from taskfleet.errors import BrokerConnectionError, ConfigurationError
from taskfleet.message import Message


@pytest.fixture
def app() -> Iterator[App]:
    """A fresh App on the in-memory broker."""
    app = App("t", broker="memory://", result_backend="memory://")
    yield app
    app.close()


def _add(x: int, y: int) -> int:
    return x + y


def _mul(x: int, y: int) -> int:
    return x * y


def messages(app: App, queue: str = "default") -> list[Message]:
    """Every ready message of ``queue``, decoded, in the order the broker hands them out."""
    deliveries = app.broker.fetch([queue], max_messages=10_000, timeout_s=0)
    return [Message.decode(d.data, accept=app.settings.accept_content) for d in deliveries]


class Recording:
    """Wraps a broker's ``enqueue_many`` to record the batches it is given; ``fail_on`` makes that call fail."""

    def __init__(self, broker: Broker, fail_on: int | None = None) -> None:
        self.broker = broker
        self.batches: list[list[Outgoing]] = []
        self.fail_on = fail_on
        self.real = broker.enqueue_many

    def __call__(self, items: Sequence[Outgoing]) -> None:
        self.batches.append(list(items))
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise BrokerConnectionError("broker gone")
        self.real(items)


def record(app: App, monkeypatch: pytest.MonkeyPatch, fail_on: int | None = None) -> Recording:
    recording = Recording(app.broker, fail_on)
    monkeypatch.setattr(app.broker, "enqueue_many", recording)
    return recording


def test_every_call_is_sent_and_the_results_come_back_in_call_order(app: App) -> None:
    add = app.task(_add)

    results = app.send_many([add.s(1, 2), add.s(3, 4), add.s(5, 6)])

    assert all(isinstance(r, AsyncResult) for r in results)
    sent = {m.id: m for m in messages(app)}
    assert [(sent[r.id].task, sent[r.id].args) for r in results] == [("t._add", (1, 2)), ("t._add", (3, 4)),
                                                                      ("t._add", (5, 6))]


def test_each_call_gets_a_new_random_task_id() -> None:
    app = App("t", broker="memory://")
    add = app.task(_add)

    ids = [r.id for r in app.send_many(add.s(i, i) for i in range(500))]

    assert len(set(ids)) == 500
    assert all(uuid.UUID(hex=i).version == 4 and uuid.UUID(hex=i).hex == i for i in ids)


def test_a_call_by_name_is_a_task_name_args_kwargs_tuple(app: App) -> None:
    [result] = app.send_many([("billing.charge", (42,), {"currency": "EUR"})])

    [message] = messages(app)
    assert (message.id, message.task, message.args, dict(message.kwargs)) == (
        result.id, "billing.charge", (42,), {"currency": "EUR"})


def test_anything_else_than_a_signature_or_a_three_tuple_is_a_type_error(app: App) -> None:
    with pytest.raises(TypeError, match="send_many takes"):
        app.send_many([("billing.charge", (42,))])  # type: ignore[list-item]


def test_each_call_goes_to_its_own_tasks_queue_with_its_priority(app: App) -> None:
    add = app.task(queue="math", priority=3)(_add)
    mul = app.task(_mul)

    app.send_many([add.s(1, 2), mul.s(2, 3), mul.s(4, 5).set(queue="urgent", priority=9)])

    assert [(m.task, m.priority) for m in messages(app, "math")] == [("t._add", 3)]
    assert [(m.task, m.priority) for m in messages(app, "default")] == [("t._mul", 0)]
    assert [(m.task, m.priority) for m in messages(app, "urgent")] == [("t._mul", 9)]


def test_a_signatures_expiry_or_its_tasks_is_counted_from_the_send(app: App) -> None:
    add = app.task(expires=60)(_add)
    before = time.time()

    app.send_many([add.s(1, 2), add.s(3, 4).set(expires=5)])

    expiries = sorted(m.expires - before for m in messages(app) if m.expires is not None)
    assert len(expiries) == 2
    assert 5 <= expiries[0] < 6
    assert 60 <= expiries[1] < 61


def test_queue_priority_and_countdown_given_to_send_many_apply_to_every_call(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    add = app.task(queue="math", priority=3)(_add)
    recording = record(app, monkeypatch)

    app.send_many([add.s(1, 2).set(priority=7), ("t.other", (), {})], queue="bulk", priority=1, countdown=30)

    [batch] = recording.batches
    assert [(item.queue, item.priority) for item in batch] == [("bulk", 1), ("bulk", 1)]
    depth = app.broker.queue_depth("bulk")
    assert (depth.ready, depth.delayed) == (0, 2)


def test_a_countdown_sets_each_messages_eta(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    add = app.task(_add)
    recording = record(app, monkeypatch)
    before = time.time()

    app.send_many([add.s(1, 2), add.s(3, 4)], countdown=30)

    [batch] = recording.batches
    assert all(29 <= item.delay_s <= 30 for item in batch)
    etas = [Message.decode(item.data, accept=app.settings.accept_content).eta for item in batch]
    assert all(eta is not None and before + 30 <= eta <= time.time() + 30 for eta in etas)


def test_an_invalid_queue_or_priority_is_refused_before_anything_is_sent(app: App) -> None:
    add = app.task(_add)
    with pytest.raises(ConfigurationError):
        app.send_many([add.s(1, 2)], queue="no spaces")
    with pytest.raises(ValueError, match="priority"):
        app.send_many([add.s(1, 2)], priority=10)

    assert app.broker.queue_depth("default").ready == 0


def test_an_unknown_option_is_a_type_error(app: App) -> None:
    with pytest.raises(TypeError):
        app.send_many([], eta=None)  # type: ignore[call-arg]


def test_nothing_to_send_returns_no_results_and_never_connects() -> None:
    app = App("t")  # no broker configured: connecting would raise

    assert app.send_many([]) == []


def test_the_broker_gets_the_batch_in_chunks_of_send_many_chunk(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer, "SEND_MANY_CHUNK", 2)
    add = app.task(_add)
    recording = record(app, monkeypatch)

    results = app.send_many(add.s(i, i) for i in range(5))

    assert [len(batch) for batch in recording.batches] == [2, 2, 1]
    assert [item.message_id for batch in recording.batches for item in batch] == [r.id for r in results]


def test_each_message_is_encoded_once_as_send_would_encode_it(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    add = app.task(_add)
    recording = record(app, monkeypatch)
    encoded: list[str] = []
    real_encode = Message.encode_body
    monkeypatch.setattr(Message, "encode_body", lambda self, s: encoded.append(self.id) or real_encode(self, s))

    [result] = app.send_many([add.s(1, 2)])

    [[item]] = recording.batches
    assert encoded == [result.id]
    message = Message.decode(item.data, accept=app.settings.accept_content)
    assert (message.id, message.task, message.args, message.queue, message.retries) == (
        result.id, "t._add", (1, 2), "default", 0)


def test_an_unserializable_argument_is_an_encode_error_and_its_chunk_is_not_sent(app: App) -> None:
    add = app.task(_add)

    with pytest.raises(EncodeError):
        app.send_many([add.s(1, 2), add.s(object(), 1)])

    assert app.broker.queue_depth("default").ready == 0


def test_a_message_above_max_message_bytes_is_refused_and_its_chunk_not_sent() -> None:
    app = App("t", broker="memory://", max_message_bytes=1024)
    add = app.task(_add)

    with pytest.raises(MessageTooLarge):
        app.send_many([add.s(1, 2), add.s("x" * 2000, 1)])

    assert app.broker.queue_depth("default").ready == 0


def test_a_failed_chunk_says_how_many_calls_were_sent_before_it(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer, "SEND_MANY_CHUNK", 2)
    add = app.task(_add)
    record(app, monkeypatch, fail_on=2)

    with pytest.raises(BrokerConnectionError) as failure:
        app.send_many(add.s(i, i) for i in range(5))

    assert any("the first 2 of 5 calls were sent" in note for note in failure.value.__notes__)
    assert app.broker.queue_depth("default").ready == 2


def test_a_later_chunk_that_cannot_be_encoded_stops_the_batch_after_the_chunks_before_it(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer, "SEND_MANY_CHUNK", 2)
    add = app.task(_add)
    calls: list[Any] = [add.s(1, 1), add.s(2, 2), add.s(object(), 3), add.s(4, 4)]

    with pytest.raises(EncodeError) as failure:
        app.send_many(calls)

    assert any("the first 2 of 4 calls were sent" in note for note in failure.value.__notes__)
    assert sorted(m.args for m in messages(app)) == [(1, 1), (2, 2)]
