"""The worker as a container's PID 1 (the image's exec-form entrypoint, no init): run in its own pid namespace
with ``unshare``, it gets SIGTERM itself, drains, and reaps the orphans its tasks leave behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskfleet import App
from tests import tasks
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

#: How long the grandchild of tasks.leave_orphan lives.
ORPHAN_LIFETIME_S = 0.3
#: Ways to get a new pid namespace: as root, or as anyone where user namespaces are allowed.
UNSHARE_COMMANDS = (["unshare", "--pid", "--fork", "--kill-child"],
                    ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"])


@pytest.fixture(scope="module")
def as_pid_1() -> list[str]:
    for command in UNSHARE_COMMANDS:
        try:
            if subprocess.run([*command, "true"], capture_output=True, timeout=10, check=False).returncode == 0:
                return command
        except OSError:
            break
    pytest.skip("this machine cannot create a pid namespace (unshare --pid needs root or user namespaces)")


@pytest.fixture
def redis_app(redis_url: str) -> Iterator[App]:
    tasks.app.configure(broker=redis_url)
    yield tasks.app
    tasks.app.close()


@pytest.fixture
def start_pid_1() -> Iterator[Callable[[str, list[str]], WorkerProcess]]:
    """Factory for a worker in its own pid namespace; stopped at the end whatever happened (killing ``unshare``
    kills the worker too: ``--kill-child``)."""
    started: list[WorkerProcess] = []

    def start(broker_url: str, unshare: list[str]) -> WorkerProcess:
        started.append(WorkerProcess(broker=broker_url, backend=None, concurrency=1, wrapper=unshare))
        return started[-1].wait_started()

    yield start
    for worker in started:
        worker.stop()


def inner_pid(outer: int) -> int:
    """The process ``unshare --fork`` started: PID 1 of the new namespace."""
    children = Path(f"/proc/{outer}/task/{outer}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def zombies_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_as_pid_1_the_worker_reaps_orphans_and_drains_on_sigterm(
    as_pid_1: list[str], redis_app: App, redis_url: str,
    start_pid_1: Callable[[str, list[str]], WorkerProcess],
) -> None:
    worker = start_pid_1(redis_url, as_pid_1)
    supervisor = inner_pid(worker.pid)
    log_lines = [str(line.get("event")) for line in worker.logs()]
    assert "worker starting" in log_lines

    for _ in range(3):
        tasks.leave_orphan.delay()
    wait_for(lambda: worker.log_text().count('"task succeeded"') >= 3, 15, message=worker.log_text()[-2000:])
    # each orphan (`sleep 0.3`, handed to the supervisor when its shell exited) has exited by now; none may stay a
    # zombie of PID 1
    time.sleep(ORPHAN_LIFETIME_S + 0.3)
    wait_for(lambda: not zombies_of(supervisor), 5, interval=0.2,
             message=f"zombies left under PID 1: {zombies_of(supervisor)}")

    os.kill(supervisor, signal.SIGTERM)  # what the container runtime does: signal PID 1 itself

    assert worker.wait_exit() == 0
    assert "worker stopped" in worker.log_text()
