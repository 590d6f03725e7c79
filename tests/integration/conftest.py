"""Fixtures shared by the RabbitMQ-specific integration tests: a fresh vhost per test and brokers on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskfleet.brokers.rabbitmq import RabbitMQBroker
from taskfleet.settings import BrokerSettings
from tests.support.rabbitmq_server import RabbitMQServer

MakeRabbit = Callable[..., RabbitMQBroker]


@pytest.fixture
def vhost(rabbitmq_server: RabbitMQServer) -> Iterator[str]:
    """A vhost of its own for the test, deleted afterwards (with every queue the test declared in it)."""
    name = rabbitmq_server.new_vhost()
    yield name
    rabbitmq_server.delete_vhost(name)


@pytest.fixture
def make_rabbit(rabbitmq_server: RabbitMQServer, vhost: str) -> Iterator[MakeRabbit]:
    """``make_rabbit(query="", management=False, **settings)``: a RabbitMQ broker on the test's vhost (``query``
    appended to its URL; ``management``: with the management API's URL), closed after the test."""
    made: list[RabbitMQBroker] = []

    def make(*, query: str = "", management: bool = False, **settings: Any) -> RabbitMQBroker:
        url = rabbitmq_server.vhost_url(vhost) + (f"?{query}" if query else "")
        broker = RabbitMQBroker(BrokerSettings(
            url=url, management_url=rabbitmq_server.management_url if management else None, **settings))
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()
