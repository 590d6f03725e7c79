"""Broker implementations behind one interface (``base.Broker``); ``connect`` picks one by URL scheme.

One sub-package per broker, each exporting its broker and beat store classes: ``redis``, ``sqlite``, ``stub``
(``memory://``) and ``rabbitmq``. ``base`` is the broker contract and ``beat_store`` the beat-store contract. Which
scheme is served by which class: the one table in ``taskfleet._connections.schemes`` (an explicit table, no dotted
plug-in paths), which imports a broker only when a URL asks for it.
"""

from __future__ import annotations

from taskfleet._connections import schemes
from taskfleet.brokers.base import Broker, DeadLetter, Delivery, Outgoing, QueueDepth
from taskfleet.errors import ConfigurationError
from taskfleet.settings import BrokerSettings

__all__ = ["Broker", "DeadLetter", "Delivery", "Outgoing", "QueueDepth", "broker_kind", "connect"]


def connect(settings: BrokerSettings) -> Broker:
    """A new broker client for ``settings.url`` (``redis://``, ``rediss://``, ``unix://``, ``amqp://``,
    ``amqps://``, ``sqlite:///path``, ``memory://``); any other scheme is a ``ConfigurationError``."""
    return schemes.connect_broker(settings)


def broker_kind(url: str) -> str | None:
    """Which broker serves ``url``: ``"redis"``, ``"rabbitmq"``, ``"sqlite"`` or ``"stub"``; None for a URL no
    broker serves. Nothing is imported or connected."""
    try:
        return schemes.kind_of(url, "broker").name
    except ConfigurationError:
        return None
