"""Tasks the fleet-control tests run, on the test tasks' app (tests/tasks.py), so a worker started with
``-A tests.control_tasks:app`` runs both. Each writes lines to a file (``tests.support.ledger.append``: atomic across
processes) that the test reads back."""

from __future__ import annotations

import os
import time

from taskfleet import Task
from tests.support.ledger import append
from tests.tasks import app

__all__ = ["app", "limited", "sleeper", "unlimited"]


@app.task(rate_limit="5/s")
def limited(path: str) -> None:
    """Limited to 5 starts a second per worker: writes ``limited <time>``."""
    append(path, "limited", time.time())


@app.task
def unlimited(path: str) -> None:
    """Writes ``unlimited <time>``."""
    append(path, "unlimited", time.time())


@app.task(bind=True)
def sleeper(self: Task[None], path: str, seconds: float) -> None:
    """Writes ``start <task id> <pid>``, sleeps, writes ``end <task id> <pid>``."""
    append(path, "start", self.request.id, os.getpid())
    time.sleep(seconds)
    append(path, "end", self.request.id, os.getpid())
