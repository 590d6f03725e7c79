"""A real worker turns what its tasks print into log events of those tasks: one JSON line per printed line, with the
task's id and name (``WorkerSettings.redirect_stdouts``). The tasks are those of tests/print_tasks.py; the feature
does not depend on the broker, so SQLite (no server) carries it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from taskfleet import App
from tests import print_tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_kind", ["sqlite"], indirect=True)]

PRINT_APP = "tests.print_tasks:app"


@pytest.fixture(autouse=True)
def _results_ready(app: App) -> None:
    """Open the SQLite result backend before a worker child does (two first opens at once can meet a lock)."""
    assert app.backend is not None
    app.backend.ping()


@pytest.fixture
def print_at_init() -> Iterator[str]:
    """Children of workers started in this test print this line as they start."""
    text = "child starting up"
    os.environ[print_tasks.PRINT_AT_INIT_ENV] = text
    yield text
    os.environ.pop(print_tasks.PRINT_AT_INIT_ENV, None)


def _events(worker: WorkerProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in worker.logs() if e.get("event") == event]


def test_a_print_in_a_task_is_one_json_log_event_with_its_task_id(app: App, start_worker: StartWorker) -> None:
    worker = start_worker(app=PRINT_APP, concurrency=1)

    result = print_tasks.say.delay("hello from a task")
    assert result.get(timeout=20) == "hello from a task"

    wait_for(lambda: _events(worker, "hello from a task"), 10, message="the printed line was never logged")
    [printed] = _events(worker, "hello from a task")
    assert printed["task_id"] == result.id
    assert printed["task"] == print_tasks.say.name
    assert printed["level"] == "info"
    assert printed["stream"] == "stdout"
    assert printed["logger"] == "taskfleet.redirected"
    assert not [line for line in worker.logs() if "raw" in line], "every line the worker wrote is JSON"


def test_a_task_writing_to_stderr_logs_a_warning(app: App, start_worker: StartWorker) -> None:
    worker = start_worker(app=PRINT_APP, concurrency=1)

    result = print_tasks.complain.delay("something odd")
    result.get(timeout=20)

    wait_for(lambda: _events(worker, "something odd"), 10, message="the stderr line was never logged")
    [printed] = _events(worker, "something odd")
    assert (printed["level"], printed["stream"], printed["task_id"]) == ("warning", "stderr", result.id)


def test_a_partial_line_is_logged_when_its_task_ends(app: App, start_worker: StartWorker) -> None:
    worker = start_worker(app=PRINT_APP, concurrency=1)

    first = print_tasks.say_unfinished.delay("no newline")
    first.get(timeout=20)
    second = print_tasks.say.delay("next task")
    second.get(timeout=20)

    wait_for(lambda: _events(worker, "next task"), 10, message="the second task's line was never logged")
    [partial] = _events(worker, "no newline")
    assert partial["task_id"] == first.id
    assert _events(worker, "next task")[0]["task_id"] == second.id


def test_a_print_outside_any_task_is_a_log_event_without_a_task_id(
        app: App, start_worker: StartWorker, print_at_init: str) -> None:
    worker = start_worker(app=PRINT_APP, concurrency=1)

    wait_for(lambda: _events(worker, print_at_init), 10, message="the child's print was never logged")
    [printed] = _events(worker, print_at_init)
    assert printed["stream"] == "stdout"
    assert "task_id" not in printed


def test_without_redirection_a_print_is_a_raw_line(app: App, start_worker: StartWorker) -> None:
    worker = start_worker(app=PRINT_APP, concurrency=1, extra=["--no-redirect-stdouts"])

    print_tasks.say.delay("left as it is").get(timeout=20)

    wait_for(lambda: {"raw": "left as it is"} in worker.logs(), 10, message="the raw line never came out")
