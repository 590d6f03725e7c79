"""The realnode tier: real pods on a real one-node cluster (tests/k8s/real-node.sh: kubelet, containerd, runc,
kube-proxy, CoreDNS, controller-manager, scheduler), with the images built from this tree and real brokers.

Run it with ``make realnode`` (``make test`` runs it too, after the other tiers). Everything runs inside
tests/k8s/netns-run.sh, a private network namespace: nothing there reaches the network, so the node binaries
(``build-testbin.sh --node``) and the images (``build-images.sh``) are built before; the fixture only finds them
cached. Outside the namespace the tier skips (fails under ``CI=true``), as when the cluster cannot start.
``TASKFLEET_REALNODE_DIR=<run dir>`` uses a cluster already up (``real-node.sh up`` prints its run dir) and leaves it.

Fixtures (see cluster.py for the helpers they hand out):

- ``cluster`` (session): the ``RealNode``: ``kubectl(...)``, ``helm(...)``, ``apply(manifest, namespace)``,
  ``get(kind, name, namespace)``, ``pods(namespace, selector)``, ``replicas(namespace, deployment)`` ->
  (desired, ready), ``wait_until(what, probe, timeout)``, ``logs(namespace, selector)``, ``env()`` (KUBECONFIG and
  PATH for subprocesses), ``kubeconfig``, ``up_seconds``.
- ``chart`` (session): the chart installed once with ``helm install --wait`` (release ``tf`` in namespace
  ``taskfleet``, image ``localhost/taskfleet:local``, pullPolicy Never): a ``Release`` (name, namespace, fullname,
  install_seconds). The operator runs in its pod, with the chart's ServiceAccount, serving every namespace.
- ``pod_redis`` / ``pod_rabbitmq`` (session): private brokers listening on 127.0.0.1 for the test (``url``,
  ``vhost_url``) and on the pod gateway 10.244.0.1 for pods (``pod_url``, ``pod_vhost_url``).
- ``namespace``: a fresh namespace for the test, deleted afterwards (without waiting).
- ``broker`` (parametrised ``redis``, ``rabbitmq``): a ``PodBroker`` for the test: ``url`` (the test's),
  ``pod_url`` and ``pod_management_url`` (the pods'), ``kind``; a fresh vhost on RabbitMQ, a db of its own on Redis.
  ``sender(broker)`` is an ``App`` on ``url`` to send ``realnode.*`` tasks with (closed after the test).
- ``broker_secret``: ``broker_secret(namespace, broker)`` creates Secret ``broker`` (keys ``url`` and, on RabbitMQ,
  ``management``) and returns its name: ``taskqueue(..., broker_secret=name, management_key=broker.management_key)``.
- ``ledger``: a ``Ledger``: ``url`` (pods append to it, see tasks.py), ``key`` (unique to the test), ``entries()``.

Worker pods run ``localhost/taskfleet-worker-test:local`` (``TEST_WORKER_IMAGE``): tests/realnode/tasks.py, task
names ``realnode.<function>``; ``taskqueue(name, queues=..., broker_secret=...)`` makes a TaskQueue manifest for it.
The tier is one node on 2 cores: keep replicas at 3 or fewer and requests tiny (``taskqueue`` does).
SQLite is not offered: its broker is a file on one machine, which pods on a node do not share.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from taskfleet import App
from tests.realnode.cluster import CHART, TASKFLEET_IMAGE, PodRabbitMQ, PodRedis, RealNode
from tests.support.servers import ServerUnavailable, require_server, serve

RELEASE, RELEASE_NAMESPACE = "tf", "taskfleet"
#: The Redis db the ledgers live in (brokers take dbs from 0 up, one per test).
LEDGER_DB = 15
BROKER_KINDS = ("redis", "rabbitmq")


@dataclass(frozen=True)
class Release:
    """The chart as installed for the session."""

    name: str
    namespace: str
    fullname: str
    install_seconds: float


@dataclass(frozen=True)
class PodBroker:
    """One test's broker: ``url`` from the test process, ``pod_url`` from pods."""

    kind: str
    url: str
    pod_url: str
    #: RabbitMQ's management API as pods reach it (None on Redis).
    pod_management_url: str | None = None

    @property
    def management_key(self) -> str | None:
        """The key of ``broker_secret``'s Secret that holds ``pod_management_url`` (for ``taskqueue``)."""
        return "management" if self.pod_management_url else None


@dataclass
class Ledger:
    """A Redis list pods append JSON entries to (tests/realnode/tasks.py), read back by the test."""

    url: str
    key: str
    client: redis.Redis

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.client.lrange(self.key, 0, -1)]


@pytest.fixture(scope="session")
def cluster() -> Iterator[RealNode]:
    """The real node for the whole session, torn down at its end (skipped locally, failed in CI, when it cannot
    start)."""
    node = RealNode()
    try:
        node.start()
    except ServerUnavailable as exc:
        node.close()
        require_server(str(exc))
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def pod_redis(cluster: RealNode) -> Iterator[PodRedis]:
    """A private Redis that pods reach at 10.244.0.1 (started once the node's bridge exists)."""
    yield from serve(PodRedis)


@pytest.fixture(scope="session")
def pod_rabbitmq(cluster: RealNode) -> Iterator[PodRabbitMQ]:
    """A private RabbitMQ whose AMQP port pods reach at 10.244.0.1."""
    yield from serve(PodRabbitMQ)


@pytest.fixture(scope="session")
def chart(cluster: RealNode) -> Iterator[Release]:
    """The chart installed with ``helm install --wait`` and the locally built image (uninstalled at the end from a
    cluster that was found up)."""
    started = time.monotonic()
    cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        "--set", f"image.repository={TASKFLEET_IMAGE.rsplit(':', 1)[0]}",
        "--set", f"image.tag={TASKFLEET_IMAGE.rsplit(':', 1)[1]}", "--set", "image.pullPolicy=Never",
        "--wait", "--timeout", "3m",
    )
    release = Release(RELEASE, RELEASE_NAMESPACE, f"{RELEASE}-taskfleet", time.monotonic() - started)
    yield release
    if not cluster.owned:  # a cluster of ours goes as a whole; one found up is left as it was
        cluster.helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "2m",
                     check=False)


@pytest.fixture
def namespace(cluster: RealNode) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards (without waiting for its pods to go)."""
    name = cluster.create_namespace("rn")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


_redis_dbs = itertools.cycle(range(LEDGER_DB))


@pytest.fixture(params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest) -> Iterator[PodBroker]:
    """The test's broker, once on Redis and once on RabbitMQ (each one fresh: a Redis db, a RabbitMQ vhost)."""
    if request.param == "redis":
        server: PodRedis = request.getfixturevalue("pod_redis")
        db = next(_redis_dbs)
        redis.Redis.from_url(f"{server.url}/{db}").flushdb()
        yield PodBroker("redis", f"{server.url}/{db}", f"{server.pod_url}/{db}")
        return
    rabbit: PodRabbitMQ = request.getfixturevalue("pod_rabbitmq")
    vhost = rabbit.new_vhost()
    yield PodBroker("rabbitmq", rabbit.vhost_url(vhost), rabbit.pod_vhost_url(vhost), rabbit.pod_management_url)
    rabbit.delete_vhost(vhost)


@pytest.fixture
def broker_secret(cluster: RealNode) -> Callable[[str, PodBroker], str]:
    """``broker_secret(namespace, broker)``: Secret ``broker`` in ``namespace`` with the broker's ``pod_url`` (key
    ``url``) and, on RabbitMQ, its ``pod_management_url`` (key ``management``); returns the Secret's name."""

    def create(namespace: str, broker: PodBroker) -> str:
        literals = [f"--from-literal=url={broker.pod_url}"]
        if broker.pod_management_url:
            literals.append(f"--from-literal=management={broker.pod_management_url}")
        cluster.kubectl("-n", namespace, "create", "secret", "generic", "broker", *literals)
        return "broker"

    return create


@pytest.fixture
def sender() -> Iterator[Callable[[PodBroker], App]]:
    """``sender(broker)``: an App named like the worker image's (``realnode``), on the broker's test-side URL."""
    apps: list[App] = []

    def make(broker: PodBroker) -> App:
        apps.append(App("realnode", broker=broker.url))
        return apps[-1]

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def ledger(pod_redis: PodRedis, request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """A ledger list unique to the test, in the session Redis's db 15."""
    client = redis.Redis.from_url(f"{pod_redis.url}/{LEDGER_DB}")
    key = f"ledger:{request.node.name}:{os.urandom(4).hex()}"
    yield Ledger(f"{pod_redis.pod_url}/{LEDGER_DB}", key, client)
    client.delete(key)
    client.close()
