"""How the supervisor starts a drain: every child gets its SIGTERM once, including one forked while the drain began
(the signal handler can run in the middle of a fork, before the new child is recorded), which otherwise ran on
until the drain timeout killed it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from taskfleet import App
from taskfleet.worker.metrics import UnservedWorkerMetrics
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.supervisor import Supervisor


@pytest.fixture
def sup(memory_app: App) -> Iterator[Supervisor]:
    supervisor = Supervisor(memory_app, WorkerSettings(queues=("tests",), concurrency=2), UnservedWorkerMetrics())
    yield supervisor
    supervisor.steering.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for a child: it exits on SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _child(pid: int) -> Any:
    """The part of a ``ChildRecord`` a drain's signals use."""
    return SimpleNamespace(process=SimpleNamespace(pid=pid), stop_sent=False)


def test_a_child_recorded_after_the_drain_began_gets_its_sigterm_at_the_next_tick(
        sup: Supervisor, sleeper: subprocess.Popen[bytes]) -> None:
    # Given a drain that began while a child was being forked (no child recorded yet)
    sup._on_stop_signal(signal.SIGTERM, None)
    # When that child is recorded and the supervisor's loop runs its drain step
    sup.children[0] = _child(sleeper.pid)
    sup._stop_children()

    # Then the child got its SIGTERM
    assert sleeper.wait(timeout=5) == -signal.SIGTERM
    assert sup.children[0].stop_sent


def test_each_child_gets_one_sigterm_however_many_ticks_the_drain_takes(sup: Supervisor) -> None:
    sent: list[tuple[int, int]] = []
    sup._signal = lambda rec, signum: sent.append((rec.process.pid, signum))  # type: ignore[method-assign]
    sup._on_stop_signal(signal.SIGTERM, None)
    sup.children[0] = _child(4242)

    for _ in range(3):
        sup._stop_children()

    assert sent == [(4242, signal.SIGTERM)]
