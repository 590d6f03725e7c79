"""Broker implementations behind one interface; ``connect`` picks one by URL scheme (an explicit table, no dotted
plug-in paths)."""

from __future__ import annotations

from taskfleet.brokers.base import Broker, DeadLetter, Delivery, Outgoing, QueueDepth
from taskfleet.errors import ConfigurationError
from taskfleet.settings import BrokerSettings
from taskfleet.urls import mask_url, url_scheme

__all__ = ["Broker", "DeadLetter", "Delivery", "Outgoing", "QueueDepth", "connect"]


def connect(settings: BrokerSettings) -> Broker:
    """A new broker client for ``settings.url`` (``redis://``, ``rediss://``, ``amqp://``, ``amqps://``,
    ``sqlite:///path``, ``memory://``)."""
    scheme = url_scheme(settings.url)
    if scheme in ("redis", "rediss", "unix"):
        from taskfleet.brokers.redis import RedisBroker

        return RedisBroker(settings)
    if scheme in ("amqp", "amqps"):
        from taskfleet.brokers.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(settings)
    if scheme == "sqlite":
        from taskfleet.brokers.sqlite import SQLiteBroker

        return SQLiteBroker(settings)
    if scheme == "memory":
        from taskfleet.brokers.stub import StubBroker

        return StubBroker(settings)
    raise ConfigurationError(
        f"unsupported broker URL {mask_url(settings.url)!r}: "
        "use redis://, rediss://, amqp://, amqps://, sqlite:///path or memory:// (tests only)"
    )
