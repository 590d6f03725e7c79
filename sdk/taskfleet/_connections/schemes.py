"""The one table of URL schemes: which broker, result backend and beat store serve a URL.

``taskfleet.brokers.connect``, ``taskfleet.backends.connect`` and ``taskfleet.brokers.beat_store.connect_beat_store``
all look the URL's scheme up here (``kind_of``) and load the class the kind names (``Kind.broker``,
``Kind.backend``, ``Kind.beat_store``). A kind names its classes by import path and loads one on first use, so a
process imports only the adapter (and client library) of the URL it is given. The paths are resolved with
``importlib`` rather than ``import`` statements: the broker packages import the beat-store interface, which looks
kinds up here, so a static import of every broker from here would tie the broker packages to each other (the
import-linter independence contract). ``tests/unit/test_schemes.py`` checks that every path loads the right class.

The table is fixed: there are no dotted plug-in paths in settings.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from taskfleet.errors import ConfigurationError
from taskfleet.urls import mask_url, url_scheme

if TYPE_CHECKING:
    from taskfleet.backends.base import ResultBackend
    from taskfleet.brokers.base import Broker
    from taskfleet.brokers.beat_store import BeatStore
    from taskfleet.brokers.fleet_store import FleetStore
    from taskfleet.settings import BackendSettings, BrokerSettings

#: Optional modules hidden while an adapter (and its client library) is first imported, so that the library takes
#: the branch it takes when they are not installed. redis-py 8 imports OpenTelemetry's metrics SDK at import only to
#: annotate its provider manager (``redis.observability.providers``; its OTel metrics import the SDK again when
#: turned on): about 2 MiB in each worker process, and it brings ``opentelemetry.trace``, which sets off this
#: process's tracing detection (``taskfleet.tracing``) with no tracer configured. Already imported (the app set
#: OpenTelemetry up first), nothing is hidden; imported later, it loads as usual.
HIDDEN_WHILE_LOADING = ("opentelemetry.sdk.metrics",)

#: What a URL is asked to serve (a field of ``Kind``).
Role = Literal["broker", "backend", "beat_store", "fleet_store"]

_UNSUPPORTED: dict[Role, Callable[[str], str]] = {
    "broker": lambda url: (f"unsupported broker URL {url!r}: "
                           "use redis://, rediss://, amqp://, amqps://, sqlite:///path or memory:// (tests only)"),
    "backend": lambda url: f"unsupported result backend URL {url!r}: use redis://, sqlite:///path or memory://",
    "beat_store": lambda url: f"beat has no store for broker URL {url!r}",
    "fleet_store": lambda url: f"fleet control has no store for broker URL {url!r}",
}


@dataclass(frozen=True, slots=True)
class Kind:
    """One family of URL schemes and the ``module:Class`` paths of what serves it (None: it serves no such role)."""

    name: str
    schemes: tuple[str, ...]
    broker: str | None
    backend: str | None
    beat_store: str | None
    fleet_store: str | None


KINDS: tuple[Kind, ...] = (
    Kind("redis", ("redis", "rediss", "unix"), broker="taskfleet.brokers.redis:RedisBroker",
         backend="taskfleet.backends.redis:RedisBackend", beat_store="taskfleet.brokers.redis:RedisBeatStore",
         fleet_store="taskfleet.brokers.redis:RedisFleetStore"),
    Kind("rabbitmq", ("amqp", "amqps"), broker="taskfleet.brokers.rabbitmq:RabbitMQBroker", backend=None,
         beat_store="taskfleet.brokers.rabbitmq:RabbitMQBeatStore",
         fleet_store="taskfleet.brokers.rabbitmq:RabbitMQFleetStore"),
    Kind("sqlite", ("sqlite",), broker="taskfleet.brokers.sqlite:SQLiteBroker",
         backend="taskfleet.backends.sqlite:SQLiteBackend", beat_store="taskfleet.brokers.sqlite:SQLiteBeatStore",
         fleet_store="taskfleet.brokers.sqlite:SQLiteFleetStore"),
    # memory:// is the scheme users' tests know; in code the in-process implementations are the stubs.
    Kind("stub", ("memory",), broker="taskfleet.brokers.stub:StubBroker",
         backend="taskfleet.backends.stub:StubBackend", beat_store="taskfleet.brokers.stub:StubBeatStore",
         fleet_store="taskfleet.brokers.stub:StubFleetStore"),
)

_BY_SCHEME: dict[str, Kind] = {scheme: kind for kind in KINDS for scheme in kind.schemes}


def kind_of(url: str, role: Role) -> Kind:
    """The kind that serves ``url`` as ``role``; ``ConfigurationError`` (URL masked) when none does."""
    kind = _BY_SCHEME.get(url_scheme(url))
    if kind is None or getattr(kind, role) is None:
        raise ConfigurationError(_UNSUPPORTED[role](mask_url(url)))
    return kind


def load(path: str) -> Any:
    """What ``path`` (``module:name``) names, its module imported now if it was not."""
    module, _, name = path.partition(":")
    if module in sys.modules:  # still through the import system: another thread may be importing it right now
        return getattr(importlib.import_module(module), name)
    return getattr(_import_hiding(module, HIDDEN_WHILE_LOADING), name)


def _import_hiding(module: str, hidden: tuple[str, ...]) -> Any:
    """``module`` imported with the not-yet-imported modules of ``hidden`` made unimportable meanwhile (a None
    entry in ``sys.modules`` makes ``import`` raise ImportError); the entries are removed again afterwards."""
    placed = [name for name in hidden if name not in sys.modules]
    for name in placed:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's documented "not importable"
    try:
        return importlib.import_module(module)
    finally:
        for name in placed:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def connect_broker(settings: BrokerSettings) -> Broker:
    """A new broker client for ``settings.url`` (``taskfleet.brokers.connect``)."""
    kind = kind_of(settings.url, "broker")
    broker: Broker = load(str(kind.broker))(settings)
    return broker


def connect_backend(settings: BackendSettings) -> ResultBackend:
    """A new result-backend client for ``settings.url`` (``taskfleet.backends.connect``)."""
    kind = kind_of(settings.url, "backend")
    backend: ResultBackend = load(str(kind.backend))(settings)
    return backend


def connect_beat_store(broker: Broker, *, namespace: str, holder: str, lease_s: float,
                       claim_ttl_s: float) -> BeatStore:
    """A beat store on ``broker``'s server (``taskfleet.brokers.beat_store.connect_beat_store``, which checks the
    arguments first)."""
    kind = kind_of(broker.settings.url, "beat_store")
    store: BeatStore = load(str(kind.beat_store)).for_broker(broker, namespace=namespace, holder=holder,
                                                             lease_s=lease_s, claim_ttl_s=claim_ttl_s)
    return store


def connect_fleet_store(broker: Broker, *, namespace: str, events_max_len: int) -> FleetStore:
    """A fleet store on ``broker``'s server (``taskfleet.brokers.fleet_store.connect_fleet_store``, which checks the
    arguments first)."""
    kind = kind_of(broker.settings.url, "fleet_store")
    store: FleetStore = load(str(kind.fleet_store)).for_broker(broker, namespace=namespace,
                                                               events_max_len=events_max_len)
    return store
