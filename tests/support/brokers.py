"""The brokers the integration suite runs against, as ``BrokerKind`` objects the fixtures are parametrised over.

A kind knows how to hand a test a clean broker URL on its session server, how to restart or crash that server, and
which behaviours of the ``Broker`` contract its broker cannot offer (``Capability``), each with the reason. A test
that needs a missing capability calls ``kind.require(...)`` and is skipped for that broker with the kind's reason;
where the behaviour exists in another form, the suite tests that form instead.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from taskfleet.brokers.base import Broker
from tests.support.rabbitmq_server import RabbitMQServer
from tests.support.servers import RedisServer, free_port

#: Brokers with a server process (what the server-restart tests run on).
KIND_NAMES = ("redis", "rabbitmq")
#: Every broker the broker-parametrised tests run on: the server brokers and the embedded SQLite file.
ALL_KIND_NAMES = (*KIND_NAMES, "sqlite")
#: What the broker contract's specification (test_broker_conformance.py) runs on: every broker and the in-process
#: stub (``memory://``), which unit tests use as a faithful broker. Tests with worker processes cannot use the stub.
CONFORMANCE_KIND_NAMES = (*ALL_KIND_NAMES, "stub")


class Capability(enum.Enum):
    """Parts of the ``Broker`` contract that not every broker can honour."""

    #: Re-enqueueing an id that is still stored replaces the stored message (no duplicate).
    REPLACE_BY_ID = "replace_by_id"
    #: A delivery is a lease: it comes back when the lease runs out, even while its consumer is alive.
    LEASES = "leases"
    #: A released message is ready again at the head of its priority.
    RELEASE_TO_HEAD = "release_to_head"
    #: ``queue_depth`` counts the delayed messages of a queue.
    COUNT_DELAYED = "count_delayed"
    #: A delayed message is ready once it is due, with no fetch to move it (``queue_depth`` never counts it as due).
    READY_WHEN_DUE = "ready_when_due"
    #: ``purge`` deletes the delayed messages of a queue too.
    PURGE_DELAYED = "purge_delayed"
    #: A consumer that still holds deliveries can fetch more than ``max_messages`` minus what it holds.
    FETCH_WHILE_HOLDING = "fetch_while_holding"
    #: ``queue_depth`` is exact the moment it returns (no statistics lag).
    EXACT_COUNTS = "exact_counts"
    #: The broker is a server that can die, be stopped and start again.
    SERVER = "server"
    #: A broker URL can name something that is not there (no server listening, a file that cannot be made).
    UNREACHABLE = "unreachable"


class BrokerKind(ABC):
    """One broker the suite runs against, on its session server."""

    name: str
    server: RedisServer | RabbitMQServer | None
    #: What this broker cannot do, with the reason (shown when a test is skipped for it).
    lacks: Mapping[Capability, str]
    #: Longest time ``queue_depth`` may lag behind the truth; depth assertions wait this long.
    count_lag_s: float
    #: Extra ``taskfleet worker`` arguments for this broker.
    worker_args: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<BrokerKind {self.name}>"

    # -- capabilities ------------------------------------------------------------------------------------------

    def supports(self, capability: Capability) -> bool:
        return capability not in self.lacks

    def require(self, *capabilities: Capability) -> None:
        """Skip the calling test for this broker, with the kind's reason, when it lacks one of ``capabilities``."""
        for capability in capabilities:
            if capability in self.lacks:
                pytest.skip(f"{self.name} lacks {capability.value}: {self.lacks[capability]}")

    # -- per-test state ----------------------------------------------------------------------------------------

    @abstractmethod
    def clean_url(self) -> contextlib.AbstractContextManager[str]:
        """A broker URL with nothing stored in it, for one test (the server is started first if it is down)."""

    @property
    def management_url(self) -> str | None:
        """The RabbitMQ management API, or None for brokers without one."""
        return None

    def broker_settings(self, url: str, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of ``BrokerSettings`` for a broker on ``url``."""
        return {"url": url, "management_url": self.management_url, **overrides}

    @abstractmethod
    def unreachable_url(self, password: str) -> str:
        """A URL of this scheme with ``password`` in it and nothing listening behind it."""

    # -- the server --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (no-op when it runs)."""
        self.require(Capability.SERVER)
        assert self.server is not None
        self.server.start()

    def stop(self) -> None:
        """Stop the server gracefully."""
        self.require(Capability.SERVER)
        assert self.server is not None
        self.server.stop()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        self.require(Capability.SERVER)
        assert self.server is not None
        self.server.kill()

    def restart(self) -> None:
        """Stop the server gracefully and start it again."""
        self.stop()
        self.start()

    # -- deliveries ----------------------------------------------------------------------------------------------

    @abstractmethod
    def lose_deliveries(self, broker: Broker) -> None:
        """Make every delivery ``broker`` holds lost to it, the way this broker loses them (an expired lease; a
        dropped connection), so another consumer can get them."""

    def expect_depth(self, broker: Broker, queue: str, *, timeout_s: float | None = None, **expected: int) -> None:
        """Assert that ``broker.queue_depth(queue)`` reaches ``expected`` (fields of ``QueueDepth``: ready,
        in_flight, delayed, due, dead, or its ``total``), waiting up to ``count_lag_s`` for brokers whose counts
        lag."""
        if "delayed" in expected and not self.supports(Capability.COUNT_DELAYED):
            raise AssertionError(f"{self.name} cannot count delayed messages: require(Capability.COUNT_DELAYED)")
        limit = self.count_lag_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while True:
            depth = broker.queue_depth(queue)
            if all(getattr(depth, field) == value for field, value in expected.items()):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name}: queue_depth({queue!r}) never reached {expected} within "
                                     f"{limit}s; last {depth}")
            time.sleep(0.1)


class RedisKind(BrokerKind):
    """Redis: every behaviour of the contract, with exact counts; db 0 of ``server``, flushed for each test."""

    name = "redis"
    count_lag_s = 0.0

    lacks: Mapping[Capability, str] = {
        Capability.READY_WHEN_DUE: "a fetch moves due messages from the delayed set to ready; until one does, "
                                   "queue_depth counts them as due",
    }

    server: RedisServer

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    @contextlib.contextmanager
    def clean_url(self) -> Iterator[str]:
        self.server.start()
        self.server.flushall()
        yield f"{self.server.url}/0"

    def unreachable_url(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{free_port()}/0"

    def lose_deliveries(self, broker: Broker) -> None:
        time.sleep(broker.settings.visibility_timeout_s + 0.2)  # the leases run out


class RabbitMQKind(BrokerKind):
    """RabbitMQ: a fresh vhost per test on the session node; counts from the management API."""

    name = "rabbitmq"
    lacks = {
        Capability.REPLACE_BY_ID: "AMQP cannot replace a stored message by id; a republished id is stored twice",
        Capability.LEASES: "a delivery is held by its connection, not a lease: it comes back when the connection "
                           "closes, never while it is open",
        Capability.RELEASE_TO_HEAD: "a released message is republished to the tail of its priority",
        Capability.COUNT_DELAYED: "delayed messages wait in a ladder shared by all queues",
        Capability.PURGE_DELAYED: "delayed messages wait in a ladder shared by all queues; they arrive after a purge",
        Capability.FETCH_WHILE_HOLDING: "basic.qos prefetch (= max_messages) bounds the unacked deliveries of a "
                                        "consumer: one that holds max_messages gets no more until it settles some",
        Capability.EXACT_COUNTS: "ready and in-flight counts come from the management API, whose statistics lag",
    }
    #: The management API's queue counters follow its sample retention policy (5 s buckets by default).
    count_lag_s = 12.0

    server: RabbitMQServer

    def __init__(self, server: RabbitMQServer) -> None:
        self.server = server
        self.worker_args = ("--broker-management-url", server.management_url)

    @property
    def management_url(self) -> str | None:
        return self.server.management_url

    @contextlib.contextmanager
    def clean_url(self) -> Iterator[str]:
        self.server.start()
        vhost = self.server.new_vhost()
        try:
            yield self.server.vhost_url(vhost)
        finally:
            self.server.start()  # a test may have left it down; the next test needs it anyway
            self.server.delete_vhost(vhost)

    def unreachable_url(self, password: str) -> str:
        return f"amqp://guest:{password}@127.0.0.1:{free_port()}/%2F"

    def lose_deliveries(self, broker: Broker) -> None:
        """Close every guest connection on the node from the server side, as a network failure would (the
        management API lists connections only after a statistics interval, so they are closed by user)."""
        self.server.api("DELETE", f"/api/connections/username/{quote(_user_of(broker.settings.url), safe='')}")
        time.sleep(0.5)  # the client's I/O thread reads the close at once; leave it time to drop the connection


class RabbitMQQuorumKind(RabbitMQKind):
    """RabbitMQ with quorum task queues (``queue_type="quorum"``): what a quorum queue changes is only priorities,
    which it refuses (tests/integration/test_rabbitmq_quorum.py), so it runs the conformance subset without them
    (tests/integration/test_broker_conformance_quorum.py)."""

    name = "rabbitmq-quorum"

    def broker_settings(self, url: str, **overrides: Any) -> dict[str, Any]:
        return super().broker_settings(url, **{"queue_type": "quorum", **overrides})


class SQLiteKind(BrokerKind):
    """SQLite: a new database file per test in the test's temporary directory; no server, exact counts."""

    name = "sqlite"
    count_lag_s = 0.0
    server = None
    lacks: Mapping[Capability, str] = {
        Capability.SERVER: "the broker is a database file opened by each process: there is no server to die, stop "
                           "or restart",
    }

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files = itertools.count(1)

    @contextlib.contextmanager
    def clean_url(self) -> Iterator[str]:
        yield self.new_url()

    def new_url(self, stem: str = "broker") -> str:
        """A URL of a database file that does not exist yet (created on first use)."""
        return f"sqlite:///{self.directory / f'{stem}-{next(self._files)}.db'}"

    def unreachable_url(self, password: str) -> str:
        """A file under ``/dev/null``, which cannot be created (SQLite URLs carry no credentials, so ``password``
        has no place in it)."""
        return "sqlite:////dev/null/taskfleet/unreachable.db"

    def lose_deliveries(self, broker: Broker) -> None:
        time.sleep(broker.settings.visibility_timeout_s + 0.2)  # the leases run out


class StubKind(BrokerKind):
    """The stub (``memory://``): the whole contract in this process; a new named store per test, which every broker
    of the test shares (as clients of one server do)."""

    name = "stub"
    count_lag_s = 0.0
    server = None
    lacks: Mapping[Capability, str] = {
        Capability.SERVER: "the broker is this process's memory: there is no server to die, stop or restart",
        Capability.UNREACHABLE: "a memory:// URL names this process's memory, which is always there",
        Capability.READY_WHEN_DUE: "as on Redis, a fetch moves due messages to ready; until one does, queue_depth "
                                   "counts them as due",
    }
    _stores = itertools.count(1)

    @contextlib.contextmanager
    def clean_url(self) -> Iterator[str]:
        yield f"memory://conformance-{next(self._stores)}"

    def unreachable_url(self, password: str) -> str:
        """There is none: skips the calling test (see ``lacks``)."""
        self.require(Capability.UNREACHABLE)
        raise AssertionError("require() skips the test")

    def lose_deliveries(self, broker: Broker) -> None:
        time.sleep(broker.settings.visibility_timeout_s + 0.2)  # the leases run out


def _user_of(url: str) -> str:
    return unquote(urlsplit(url).username or "guest")
