"""Specification, with real processes, of the health port in a container: workers and beats started side by side
with the container default all run (one serves the default port, the others go on without health checks and say
so), while a port asked for and in use stops the start with a clear error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet.worker.exitcodes import ExitCode
from taskfleet.worker.settings import DEFAULT_HEALTH_PORT_IN_CONTAINER
from tests.support.waiting import wait_for
from tests.support.workers import json_lines, terminate

REPO = Path(__file__).resolve().parents[2]
GAVE_UP = "health checks not served: their default port is in use"


def container_env(**extra: str) -> dict[str, str]:
    """This environment as in a pod (``KUBERNETES_SERVICE_HOST`` set, as in a container with ``/.dockerenv``),
    without the developer's TASKFLEET_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    return {**env, "KUBERNETES_SERVICE_HOST": "10.96.0.1", "PYTHONUNBUFFERED": "1", **extra}


class Process:
    """``taskfleet <command> ...`` as a subprocess whose JSON log lines the test reads."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="taskfleet-health-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "taskfleet", *command], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def events(self) -> list[dict[str, Any]]:
        return json_lines(self.log_path, raw_key="event")

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e.get("event") == name), None)

    def wait_running(self, started: str) -> dict[str, Any]:
        """The ``started`` event, once logged; fails if the process exits first."""
        wait_for(lambda: self.proc.poll() is not None or self.event(started), 30,
                 message=f"{started!r} never logged")
        assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
        found = self.event(started)
        assert found is not None
        return found

    def stop(self) -> None:
        terminate(self.proc, 30)
        self._log.close()
        self.log_path.unlink(missing_ok=True)


@pytest.fixture
def start() -> Iterator[Callable[..., Process]]:
    """Factory of ``Process``es, each stopped after the test."""
    started: list[Process] = []

    def factory(*command: str, env: dict[str, str] | None = None) -> Process:
        process = Process(list(command), env or container_env())
        started.append(process)
        return process

    yield factory
    for process in started:
        process.stop()


def worker(broker: str) -> list[str]:
    return ["worker", "-A", "tests.tasks:app", "-Q", "tests", "-c", "1", "--broker", broker, "--log-format", "json"]


def beat(broker: str) -> list[str]:
    return ["beat", "-A", "tests.support.beat:app", "--broker", broker, "--log-format", "json"]


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'broker.db'}"


def _check_side_by_side(first: Process, first_started: str, second: Process, second_started: str) -> None:
    # Then both run; whichever bound the default port first serves it, any other one says it serves nothing
    started = [first.wait_running(first_started), second.wait_running(second_started)]
    processes = (first, second)
    serving = [p for p, s in zip(processes, started, strict=True) if s.get("health_port") is not None]
    assert len(serving) <= 1
    for process, event in zip(processes, started, strict=True):
        if event.get("health_port") is None:
            gave_up = process.event(GAVE_UP)
            assert gave_up is not None, process.events()
            assert gave_up["level"] == "warning"
            assert gave_up["port"] == DEFAULT_HEALTH_PORT_IN_CONTAINER
        else:
            assert event["health_port"] == DEFAULT_HEALTH_PORT_IN_CONTAINER
    # (Another process of this machine may hold the default port: then neither serves it, and both still run.)
    assert len(serving) == 1 or all(p.event(GAVE_UP) for p in processes)


def test_a_worker_and_a_beat_side_by_side_in_a_container_both_run(
        start: Callable[..., Process], tmp_path: Path) -> None:
    broker = _sqlite(tmp_path)
    first = start(*worker(broker))
    first.wait_running("worker starting")

    second = start(*beat(broker))

    _check_side_by_side(first, "worker starting", second, "beat process starting")


def test_two_workers_side_by_side_in_a_container_both_run(start: Callable[..., Process], tmp_path: Path) -> None:
    broker = _sqlite(tmp_path)
    first = start(*worker(broker))
    first.wait_running("worker starting")

    second = start(*worker(broker))

    _check_side_by_side(first, "worker starting", second, "worker starting")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process's socket listens on (every interface, as the health server binds by default)."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


@pytest.mark.parametrize("command", [worker, beat], ids=["worker", "beat"])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_explicit_health_port_in_use_stops_the_start_with_a_clear_error(
        command: Callable[[str], list[str]], how: str, busy_port: int, tmp_path: Path) -> None:
    args = command(_sqlite(tmp_path))
    env = container_env()
    if how == "flag":
        args += ["--health-port", str(busy_port)]
    else:
        env["TASKFLEET_HEALTH_PORT"] = str(busy_port)

    done = subprocess.run([sys.executable, "-m", "taskfleet", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)

    assert done.returncode == ExitCode.BAD_CONFIG, done.stdout + done.stderr
    [error] = [json.loads(line) for line in done.stderr.splitlines() if "cannot serve health checks" in line]
    assert error["level"] == "error"
    assert f":{busy_port}: " in error["error"]
    assert "in use" in error["error"]
