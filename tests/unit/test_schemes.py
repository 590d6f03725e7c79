"""Specification of the one URL-scheme table (``taskfleet._connections.schemes``) that ``taskfleet.brokers.connect``,
``taskfleet.backends.connect`` and ``connect_beat_store`` share."""

from __future__ import annotations

import pytest

from taskfleet._connections.schemes import KINDS, kind_of, load
from taskfleet.backends import connect as connect_backend
from taskfleet.backends.base import ResultBackend
from taskfleet.backends.stub import StubBackend
from taskfleet.brokers import broker_kind, connect
from taskfleet.brokers.base import Broker
from taskfleet.brokers.beat_store import BeatStore, connect_beat_store
from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.brokers.stub import StubBeatStore, StubBroker, StubFleetStore
from taskfleet.errors import ConfigurationError
from taskfleet.settings import BackendSettings, BrokerSettings

ROLES = [("broker", Broker), ("backend", ResultBackend), ("beat_store", BeatStore), ("fleet_store", FleetStore)]


@pytest.mark.parametrize(("role", "base"), ROLES)
@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
def test_every_path_in_the_table_loads_a_class_of_its_role(kind: object, role: str, base: type) -> None:
    path = getattr(kind, role)
    if path is None:
        pytest.skip(f"{kind} serves no {role}")

    found = load(path)

    assert isinstance(found, type)
    assert issubclass(found, base), f"{path} is not a {base.__name__}"


def test_each_scheme_belongs_to_one_kind() -> None:
    schemes = [scheme for kind in KINDS for scheme in kind.schemes]

    assert len(schemes) == len(set(schemes))


@pytest.mark.parametrize(
    ("url", "kind"),
    [("redis://h/0", "redis"), ("REDISS://h/0", "redis"), ("unix:///tmp/r.sock", "redis"), ("amqp://h/", "rabbitmq"),
     ("amqps://h/", "rabbitmq"), ("sqlite:///x.db", "sqlite"), ("memory://", "stub")],
)
def test_a_broker_url_is_served_by_the_kind_of_its_scheme(url: str, kind: str) -> None:
    assert kind_of(url, "broker").name == kind


def test_memory_urls_are_served_by_the_stubs() -> None:
    broker = connect(BrokerSettings(url="memory://"))

    assert isinstance(broker, StubBroker)
    assert isinstance(connect_backend(BackendSettings(url="memory://")), StubBackend)
    assert isinstance(connect_beat_store(broker, namespace="n", holder="h"), StubBeatStore)
    assert isinstance(connect_fleet_store(broker, namespace="n"), StubFleetStore)


def test_an_unknown_broker_scheme_is_refused_with_the_schemes_to_use_and_the_password_masked() -> None:
    with pytest.raises(ConfigurationError) as raised:
        connect(BrokerSettings(url="kafka://user:s3cret@h:9092"))

    assert str(raised.value) == ("unsupported broker URL 'kafka://user:***@h:9092': use redis://, rediss://, amqp://, "
                                 "amqps://, sqlite:///path or memory:// (tests only)")


@pytest.mark.parametrize("url", ["kafka://h", "amqp://guest:s3cret@h/"])
def test_a_scheme_without_a_result_backend_is_refused_as_one(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        connect_backend(BackendSettings(url=url))

    assert str(raised.value).startswith("unsupported result backend URL ")
    assert str(raised.value).endswith(": use redis://, sqlite:///path or memory://")
    assert "s3cret" not in str(raised.value)


def test_a_broker_of_an_unknown_scheme_has_no_beat_store() -> None:
    broker = connect(BrokerSettings(url="memory://"))
    object.__setattr__(broker, "settings", BrokerSettings(url="kafka://user:s3cret@h"))

    with pytest.raises(ConfigurationError, match=r"^beat has no store for broker URL 'kafka://user:\*\*\*@h'$"):
        connect_beat_store(broker, namespace="n", holder="h")


def test_a_broker_of_an_unknown_scheme_has_no_fleet_store() -> None:
    broker = connect(BrokerSettings(url="memory://"))
    object.__setattr__(broker, "settings", BrokerSettings(url="kafka://user:s3cret@h"))

    with pytest.raises(ConfigurationError, match=r"^fleet control has no store for broker URL 'kafka://user:\*\*\*@h'$"):
        connect_fleet_store(broker, namespace="n")


@pytest.mark.parametrize(("url", "kind"), [
    ("redis://h:6379/0", "redis"), ("rediss://h/0", "redis"), ("unix:///run/redis.sock", "redis"),
    ("amqp://u:p@h/v", "rabbitmq"), ("amqps://h/", "rabbitmq"), ("sqlite:///tmp/x.db", "sqlite"),
    ("memory://", "stub"), ("kafka://h", None),
])
def test_broker_kind_names_the_broker_of_a_url_without_connecting(url: str, kind: str | None) -> None:
    assert broker_kind(url) == kind
