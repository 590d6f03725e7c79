"""``taskfleet workers | inspect | control | revoke`` against real workers on Redis, RabbitMQ and SQLite: the
commands run as subprocesses, as an operator runs them, with the app named by ``--app-name`` and ``--broker``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App
from taskfleet.states import State
from tests.conftest import StartWorker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 30.0
#: How long the commands wait for replies: generous, since a worker just started may still be connecting.
REPLY_TIMEOUT_S = "3"


def taskfleet(broker_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a fleet command on the test app (``tests``, tests/tasks.py) at ``broker_url``, as a script does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    return subprocess.run([sys.executable, "-m", "taskfleet", *args, "--app-name", "tests", "--broker", broker_url],
                          cwd=REPO, env={**env, "COLUMNS": "200"}, text=True, capture_output=True,
                          timeout=CLI_TIMEOUT_S, check=False)


def listed_workers(broker_url: str) -> list[dict[str, Any]]:
    result = taskfleet(broker_url, "workers", "--json")
    assert result.returncode == 0, result.stderr
    workers: list[dict[str, Any]] = json.loads(result.stdout)
    return workers


def test_workers_lists_a_running_worker_with_its_queues_and_pool(broker_url: str,
                                                                 start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=2)

    wait_for(lambda: listed_workers(broker_url), 10.0, message="the worker's first heartbeat")

    [record] = listed_workers(broker_url)
    assert record["id"].endswith(f":{worker.pid}")
    assert (record["queues"], record["concurrency"]) == (["tests"], 2)
    table = taskfleet(broker_url, "workers")
    assert record["id"] in table.stdout
    assert "0/2" in table.stdout


def test_inspect_ping_is_answered_by_the_worker(broker_url: str, start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=1)

    result = taskfleet(broker_url, "inspect", "ping", "--timeout", REPLY_TIMEOUT_S)

    assert result.returncode == 0, result.stderr
    assert f":{worker.pid}" in result.stdout
    assert "pong" in result.stdout


def test_control_rate_limit_is_answered_ok(broker_url: str, start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=1)

    result = taskfleet(broker_url, "control", "rate_limit", "tests.add", "10/m", "--timeout", REPLY_TIMEOUT_S,
                       "--json")

    assert result.returncode == 0, result.stderr
    [(who, reply)] = json.loads(result.stdout).items()
    assert who.endswith(f":{worker.pid}")
    assert reply["ok"] is True


def test_a_task_revoked_while_queued_ends_revoked_when_a_worker_starts(app: App, broker_url: str,
                                                                         start_worker: StartWorker) -> None:
    from tests import tasks

    # Given a task waiting in its queue, with no worker running
    queued = tasks.add.delay(1, 2)

    # When it is revoked from the command line, and only then a worker starts
    result = taskfleet(broker_url, "revoke", queued.id)
    assert result.returncode == 0, result.stderr
    assert "revoked 1 task" in result.stdout
    start_worker(concurrency=1)

    # Then it never runs and ends REVOKED
    wait_for(lambda: queued.state == State.REVOKED, 15.0, message="the revoked task to end REVOKED")


def test_an_inspect_nobody_answers_exits_1_and_says_so(broker_url: str) -> None:
    result = taskfleet(broker_url, "inspect", "active")

    assert result.returncode == 1
    assert "no worker answered within 1.0s" in result.stderr
