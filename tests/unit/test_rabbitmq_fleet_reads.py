"""Specification of how the RabbitMQ fleet store reads its streams when RabbitMQ refuses a consumer on a stream
that is not ready yet: right after a stream is declared, a loaded RabbitMQ may close the whole connection with 541
INTERNAL_ERROR (CI saw it on a worker's first events read). A fake link stands in for the connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika.exceptions
import pytest

from taskfleet.brokers.rabbitmq import _streams as streams
from taskfleet.brokers.rabbitmq._fleet import RabbitMQFleetStore
from taskfleet.errors import BrokerConnectionError
from taskfleet.settings import BrokerSettings


class FakeLink:
    """``AmqpLink.call`` as ``_invoke`` makes it fail: ``BrokerConnectionError`` from pika's own error. Each call
    takes the next of ``failures`` (None: succeed, returning the end of an empty events stream)."""

    masked_url = "amqp://guest:***@127.0.0.1:5672/"

    def __init__(self, *failures: BaseException | None) -> None:
        self.failures = list(failures)
        self.calls = 0

    def call(self, fn: Callable[[Any], Any], *, action: str, timeout_s: float | None = None) -> Any:
        self.calls += 1
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise BrokerConnectionError(f"rabbitmq broker {self.masked_url} unreachable: {failure}") from failure
        return streams.StreamRead([], 41)


def _store(link: FakeLink, monkeypatch: pytest.MonkeyPatch) -> RabbitMQFleetStore:
    monkeypatch.setattr(streams, "NOT_READY_PAUSE_S", 0.0)
    store = RabbitMQFleetStore(BrokerSettings(url="amqp://guest:guest@127.0.0.1:5672/"), namespace="t",
                               events_max_len=1000)
    store._link = link  # type: ignore[assignment]
    return store


def test_a_read_refused_because_the_stream_is_not_ready_is_tried_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    link = FakeLink(pika.exceptions.ConnectionClosedByBroker(541, "INTERNAL_ERROR"))

    assert _store(link, monkeypatch).events_end() == "41"
    assert link.calls == 2


def test_a_stream_still_not_ready_on_the_second_try_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    not_ready = pika.exceptions.ConnectionClosedByBroker(541, "INTERNAL_ERROR")
    link = FakeLink(not_ready, not_ready)

    with pytest.raises(BrokerConnectionError, match="INTERNAL_ERROR"):
        _store(link, monkeypatch).events_end()
    assert link.calls == 2


@pytest.mark.parametrize("error", [
    pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - broker forced connection closure"),
    pika.exceptions.StreamLostError("Transport indicated EOF"),
], ids=["closed-by-broker", "stream-lost"])
def test_other_lost_connections_are_not_read_again(error: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    link = FakeLink(error)

    with pytest.raises(BrokerConnectionError):
        _store(link, monkeypatch).events_end()
    assert link.calls == 1
