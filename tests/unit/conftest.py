"""Fixtures shared by unit specifications: the test tasks' app on in-memory parts, and a result backend that is the
in-process stub or a SQLite file."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskfleet import App
from taskfleet.backends import connect
from taskfleet.backends.base import ResultBackend
from taskfleet.settings import BackendSettings
from taskfleet.worker.logging import configure_logging
from tests import tasks


@pytest.fixture
def memory_app() -> Iterator[App]:
    """The test tasks' App on a fresh in-memory broker and result backend; restored afterwards."""
    previous_alarm = signal.getsignal(signal.SIGALRM)  # the Executor installs its own SIGALRM handler
    tasks.app.configure(broker="memory://", result_backend="memory://")
    yield tasks.app
    tasks.app.configure(broker=None, result_backend=None)
    signal.signal(signal.SIGALRM, previous_alarm)


@pytest.fixture(params=["memory", "sqlite"])
def stub_or_sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultBackend]:
    """A result backend on the stub (``memory://``) or on a SQLite file."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'results.db'}"
    opened = connect(BackendSettings(url=url))
    yield opened
    opened.close()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The worker's JSON log lines, written to this buffer for the test."""
    stream = io.StringIO()
    configure_logging(fmt="json", level="info", stream=stream)
    yield stream
    configure_logging(fmt="json", level="info")
