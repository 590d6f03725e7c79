"""Shared fixtures. Server fixtures are session-scoped (one private server per run); per-test fixtures hand out
clean state on it.

Broker tests are parametrised over ``broker_kind`` (``tests/support/brokers.py``): every test that uses
``broker_url``, ``make_broker``, ``app`` or ``start_worker`` runs once per broker (the conformance suite also on the
in-process stub, ``memory://``). Results go to the session Redis
(db 1), or to a SQLite file beside the broker's when the broker is SQLite. Redis-only tests use ``redis_server`` /
``redis_url`` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App
from taskfleet.brokers import Broker, connect
from taskfleet.settings import BrokerSettings
from tests.support.brokers import (
    ALL_KIND_NAMES,
    BrokerKind,
    RabbitMQKind,
    RabbitMQQuorumKind,
    RedisKind,
    SQLiteKind,
    StubKind,
)
from tests.support.k8s import ControlPlane
from tests.support.rabbitmq_server import RabbitMQServer
from tests.support.servers import RedisServer, serve
from tests.support.workers import WorkerProcess

#: The visibility timeout of ``make_broker``'s brokers: short, so lease tests are quick (RabbitMQ ignores it).
TEST_VISIBILITY_TIMEOUT_S = 1.0

MakeBroker = Callable[..., Broker]
StartWorker = Callable[..., WorkerProcess]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's headless chromium through Playwright (a ``playwright.sync_api.Browser``), one for the whole session:
    the browser tests and the e2e Autoscaling page share it, as Playwright's sync API runs one instance per thread.
    Missing chromium: skipped locally, a failure under CI=true."""
    from tests.support.browser import launch_chromium
    from tests.support.servers import ServerUnavailable, require_server

    stack = ExitStack()
    try:
        browser = stack.enter_context(launch_chromium())
    except ServerUnavailable as exc:
        require_server(str(exc))
    with stack:
        yield browser


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (skipped on a laptop without one, failed in CI)."""
    yield from serve(RedisServer)


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """A private RabbitMQ node for the whole session (skipped on a laptop without one, failed in CI)."""
    yield from serve(RabbitMQServer)


@pytest.fixture(scope="session")
def kube() -> Iterator[ControlPlane]:
    """A private etcd + kube-apiserver for the whole session, with an admin kubeconfig (skipped on a laptop
    without the binaries, failed in CI). Without controllers: use a namespace per test, don't rely on GC."""
    yield from serve(ControlPlane)


@pytest.fixture(scope="module")
def durable_redis_server() -> Iterator[RedisServer]:
    """A Redis of the module's own whose append-only file is fsynced on every write, so a restart keeps what it
    acknowledged (the restart and chaos tests restart it; the session Redis is never restarted)."""
    yield from serve(lambda: RedisServer(durable=True))


@pytest.fixture(params=ALL_KIND_NAMES)
def broker_kind(request: pytest.FixtureRequest) -> BrokerKind:
    """The broker this run of the test is for; its server is started on first use."""
    if request.param == "redis":
        return RedisKind(request.getfixturevalue("redis_server"))
    if request.param == "sqlite":
        return SQLiteKind(request.getfixturevalue("tmp_path"))
    if request.param == "stub":
        return StubKind()
    if request.param == "rabbitmq-quorum":
        return RabbitMQQuorumKind(request.getfixturevalue("rabbitmq_server"))
    return RabbitMQKind(request.getfixturevalue("rabbitmq_server"))


@pytest.fixture
def broker_url(broker_kind: BrokerKind) -> Iterator[str]:
    """URL of an empty broker for this test (Redis: db 0, flushed; RabbitMQ: a fresh vhost, deleted after)."""
    with broker_kind.clean_url() as url:
        yield url


@pytest.fixture
def management_url(broker_kind: BrokerKind) -> str | None:
    """The RabbitMQ management API of ``broker_url``'s server; None for Redis."""
    return broker_kind.management_url


@pytest.fixture
def make_broker(broker_kind: BrokerKind, broker_url: str) -> Iterator[MakeBroker]:
    """Factory of brokers on the test's clean broker; keyword arguments override ``BrokerSettings`` (the
    visibility timeout is ``TEST_VISIBILITY_TIMEOUT_S``). All are closed at the end."""
    brokers: list[Broker] = []

    def make(**overrides: Any) -> Broker:
        overrides.setdefault("visibility_timeout_s", TEST_VISIBILITY_TIMEOUT_S)
        broker = connect(BrokerSettings(**broker_kind.broker_settings(broker_url, **overrides)))
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of db 0 on the session's redis-server, running and empty at the start of the test (Redis-only tests)."""
    redis_server.start()  # a restart test may have left it stopped
    redis_server.flushall()
    return f"{redis_server.url}/0"


@pytest.fixture
def backend_url(request: pytest.FixtureRequest) -> str:
    """URL of db 1 on the session's redis-server, empty at the start of the test; for a test on the SQLite broker,
    a new SQLite file beside the broker's (so SQLite tests need no server at all)."""
    if "broker_kind" in request.fixturenames:
        kind = request.getfixturevalue("broker_kind")
        if isinstance(kind, SQLiteKind):
            return kind.new_url("results")
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    redis_server.start()
    redis_server.flushall()
    return f"{redis_server.url}/1"


@pytest.fixture
def app(broker_url: str, management_url: str | None, backend_url: str) -> Iterator[App]:
    """The test tasks' App (tests/tasks.py), pointed at the test's broker and result backend."""
    from tests import tasks

    tasks.app.configure(broker=broker_url, broker_management_url=management_url, result_backend=backend_url)
    yield tasks.app
    tasks.app.close()


@pytest.fixture
def start_worker(broker_kind: BrokerKind, broker_url: str, backend_url: str) -> Iterator[StartWorker]:
    """Factory: ``start_worker(concurrency=2, extra=[...])`` runs a real worker on the test's broker; all are
    stopped at the end."""
    started: list[WorkerProcess] = []

    def start(**kwargs: Any) -> WorkerProcess:
        kwargs.setdefault("broker", broker_url)
        kwargs.setdefault("backend", backend_url)
        kwargs["extra"] = [*broker_kind.worker_args, *kwargs.get("extra", [])]
        worker = WorkerProcess(**kwargs)
        started.append(worker)
        return worker.wait_started()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def marker(tmp_path: Path) -> str:
    """A file path tasks append lines to."""
    return str(tmp_path / "marker.txt")
