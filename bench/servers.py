"""Private broker servers for the benchmark, started as the integration tests start them (tests/support): free
loopback ports, never a system instance, stopped afterwards.

One Redis serves the whole run (results of every system, and the Redis broker); RabbitMQ runs only while its
broker is being measured, so its idle Erlang schedulers do not take CPU from the other brokers' runs. Every system
gets a fresh slot: a flushed Redis, a new RabbitMQ vhost or a new SQLite file.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.rabbitmq_server import RabbitMQServer
from tests.support.servers import RedisServer

#: Redis databases of the Redis broker and of every system's results.
BROKER_DB = 0
RESULTS_DB = 1


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one system runs: its broker and result-backend URLs."""

    broker_url: str
    backend_url: str


class BenchServers:
    """The run's Redis (started on enter) and, per broker, what that broker needs."""

    def __init__(self) -> None:
        self.redis = RedisServer()
        self._tmp = tempfile.TemporaryDirectory(prefix="tf-bench-")
        self._files = itertools.count(1)

    def __enter__(self) -> BenchServers:
        self.redis.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.close()
        self._tmp.cleanup()

    def new_directory(self, prefix: str) -> Path:
        """A new empty directory under the run's temporary directory (removed on exit)."""
        directory = Path(self._tmp.name) / f"{prefix}-{next(self._files)}"
        directory.mkdir()
        return directory

    def versions(self) -> dict[str, str]:
        """Server versions for the report (``redis-server --version``; RabbitMQ's comes from its node, see
        ``BrokerSlots.version``)."""
        out = subprocess.run([self.redis.binary, "--version"], capture_output=True, text=True, check=False).stdout
        version = next((word[2:] for word in out.split() if word.startswith("v=")), out.strip())
        return {"redis-server": version}

    @contextlib.contextmanager
    def broker(self, kind: str) -> Iterator[BrokerSlots]:
        """The servers of broker ``kind`` for as long as its systems run."""
        if kind == "rabbitmq":
            with RabbitMQServer() as rabbitmq:
                yield BrokerSlots(self, kind, rabbitmq)
        else:
            yield BrokerSlots(self, kind, None)


class BrokerSlots:
    """Hands out a fresh ``Slot`` per system on one broker."""

    def __init__(self, servers: BenchServers, kind: str, rabbitmq: RabbitMQServer | None) -> None:
        self.servers = servers
        self.kind = kind
        self.rabbitmq = rabbitmq

    def version(self) -> str | None:
        """RabbitMQ's version from its management API (None for the other brokers)."""
        if self.rabbitmq is None:
            return None
        overview = self.rabbitmq.api("GET", "/api/overview")
        return f"{overview.get('rabbitmq_version')} (Erlang {overview.get('erlang_version')})"

    @contextlib.contextmanager
    def slot(self) -> Iterator[Slot]:
        """A fresh, empty place for one system; cleaned up afterwards."""
        redis = self.servers.redis
        redis.flushall()
        results = f"{redis.url}/{RESULTS_DB}"
        try:
            if self.kind == "redis":
                yield Slot(f"{redis.url}/{BROKER_DB}", results)
            elif self.kind == "rabbitmq":
                assert self.rabbitmq is not None
                vhost = self.rabbitmq.new_vhost()
                try:
                    yield Slot(self.rabbitmq.vhost_url(vhost), results)
                finally:
                    self.rabbitmq.delete_vhost(vhost)
            elif self.kind == "sqlite":
                directory = self.servers.new_directory("sqlite")
                url = f"sqlite:///{directory / 'taskfleet.db'}"  # broker and results in one file, as documented
                try:
                    yield Slot(url, url)
                finally:
                    shutil.rmtree(directory, ignore_errors=True)
            else:
                raise ValueError(f"unknown broker {self.kind!r}")
        finally:
            redis.flushall()
