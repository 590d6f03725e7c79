"""Tasks that write to stdout and stderr, registered on the test app of tests/tasks.py: a worker started with
``-A tests.print_tasks:app`` runs these and those.

``TASKFLEET_TEST_PRINT_AT_INIT``, when set in a worker's environment, is printed by each child as it starts
(``worker_process_init``), outside any task.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from taskfleet import signals
from tests.tasks import app

__all__ = ["app"]

PRINT_AT_INIT_ENV = "TASKFLEET_TEST_PRINT_AT_INIT"


@app.task
def say(text: str) -> str:
    """``print(text)``: one line on stdout."""
    print(text)
    return text


@app.task
def complain(text: str) -> None:
    """``print(text, file=sys.stderr)``: one line on stderr."""
    print(text, file=sys.stderr)


@app.task
def say_unfinished(text: str) -> None:
    """Writes ``text`` with no newline and flushes: a partial line, ended by the end of the task."""
    sys.stdout.write(text)
    sys.stdout.flush()


@signals.worker_process_init.connect
def _print_at_init(sender: Any = None, **named: Any) -> None:
    text = os.environ.get(PRINT_AT_INIT_ENV)
    if text:
        print(text)
