"""The bookkeeping of RabbitMQ's windowed publisher confirms (``_window.ConfirmWindow``): which messages are still
owed a confirm, which were refused, and which must be published again after a lost channel."""

from __future__ import annotations

import pytest

from taskfleet import App
from taskfleet.brokers.rabbitmq._publisher import Publish
from taskfleet.brokers.rabbitmq._window import NACKED, RETURNED, ConfirmWindow, Refusal, describe
from taskfleet.errors import ConfigurationError


def _message(n: int, queue: str = "jobs") -> Publish:
    return Publish("", queue, b"x", f"m{n}")


def _window_with(*tags: int, limit: int = 10) -> ConfirmWindow:
    window = ConfirmWindow(limit)
    for tag in tags:
        window.written(tag, _message(tag))
    return window


def test_an_ack_forgets_its_message_and_a_multiple_ack_every_one_up_to_its_tag() -> None:
    window = _window_with(1, 2, 3, 4)
    window.confirmed(2, multiple=False, ack=True)
    assert window.outstanding == 3
    window.confirmed(3, multiple=True, ack=True)
    assert window.outstanding == 1
    assert window.refusals == []


def test_a_nack_is_kept_as_a_refusal_of_that_message() -> None:
    window = _window_with(1, 2, 3)
    window.confirmed(2, multiple=True, ack=False)
    assert [r.message.message_id for r in window.take_refusals()] == ["m1", "m2"]
    assert window.take_refusals() == []  # reported once
    assert window.outstanding == 1


def test_a_returned_message_is_refused_when_its_ack_follows() -> None:
    window = _window_with(1, 2)
    assert window.returned("", "jobs", "m2")
    window.confirmed(2, multiple=True, ack=True)
    assert window.take_refusals() == [Refusal(_message(2), RETURNED)]


def test_a_return_that_matches_no_pending_message_is_left_to_the_batch() -> None:
    assert not _window_with(1).returned("", "other", "m1")


def test_confirms_of_tags_outside_the_window_are_ignored() -> None:
    window = _window_with(5)
    window.confirmed(4, multiple=True, ack=False)  # a batch's tags, below the window's
    window.confirmed(6, multiple=False, ack=True)
    assert window.outstanding == 1
    assert window.refusals == []


def test_a_lost_channel_turns_the_unconfirmed_messages_into_orphans_in_order() -> None:
    window = _window_with(1, 2, 3, limit=3)
    window.confirmed(1, multiple=False, ack=True)
    window.channel_lost()
    assert window.outstanding == 2  # orphans still count against the window
    assert [m.message_id for m in window.take_orphans()] == ["m2", "m3"]
    assert window.outstanding == 0


def test_the_window_is_full_at_its_limit() -> None:
    assert not _window_with(1, 2, limit=3).full
    assert _window_with(1, 2, 3, limit=3).full
    with pytest.raises(ValueError, match="at least 1"):
        ConfirmWindow(0)


def test_describe_counts_the_refusals_by_reason_and_names_the_first_ids() -> None:
    refusals = [Refusal(_message(n), NACKED) for n in range(7)] + [Refusal(_message(9), RETURNED)]
    text = describe(refusals)
    assert text.startswith("8 published message(s) were not stored (1 unroutable (queue deleted?), 7 refused")
    assert "m0, m1, m2, m3, m4 and 3 more" in text


def test_the_confirm_settings_are_checked_and_reach_the_broker_settings() -> None:
    with pytest.raises(ConfigurationError, match="broker_publish_confirms"):
        App("x", broker="amqp://h", broker_publish_confirms="later")
    with pytest.raises(ConfigurationError, match="broker_confirm_window"):
        App("x", broker="amqp://h", broker_confirm_window=0)
    settings = App("x", broker="amqp://h", broker_publish_confirms="sync", broker_confirm_window=7).settings
    assert (settings.broker_settings().publish_confirms, settings.broker_settings().confirm_window) == ("sync", 7)


def test_flush_is_a_no_op_where_publishes_return_stored() -> None:
    app = App("x", broker="memory://")
    app.flush(timeout_s=0)  # before any publish: connects nothing
    app.send("x.anything")
    app.flush(timeout_s=0)
