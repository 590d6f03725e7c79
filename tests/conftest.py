"""Shared fixtures. Server fixtures are session-scoped (one private server per run); per-test fixtures hand out
clean state on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App
from tests.support.servers import RedisServer, ServerUnavailable, require_server
from tests.support.workers import WorkerProcess


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (skipped on a laptop without one, failed in CI)."""
    try:
        server = RedisServer().start()
    except ServerUnavailable as exc:
        require_server(str(exc))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of db 0 on the session's redis-server, running and empty at the start of the test."""
    redis_server.start()  # a restart test may have left it stopped
    redis_server.flushall()
    return f"{redis_server.url}/0"


@pytest.fixture
def backend_url(redis_server: RedisServer, redis_url: str) -> str:
    """URL of db 1 on the session's redis-server (results), next to the broker's db 0."""
    return f"{redis_server.url}/1"


@pytest.fixture
def app(redis_url: str, backend_url: str) -> Iterator[App]:
    """The test tasks' App (tests/tasks.py), pointed at the test's broker and result backend."""
    from tests import tasks

    tasks.app.configure(broker=redis_url, result_backend=backend_url)
    yield tasks.app
    tasks.app.close()


@pytest.fixture
def start_worker(redis_url: str, backend_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``start_worker(concurrency=2, extra=[...])`` runs a real worker; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(**kwargs: Any) -> WorkerProcess:
        kwargs.setdefault("broker", redis_url)
        kwargs.setdefault("backend", backend_url)
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
