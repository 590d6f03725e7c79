"""Tasks that say which database connection they ran on; found by ``app.autodiscover_tasks()``."""

import os
from typing import Any

from django.db import connection
from django.db.backends.signals import connection_created
from proj.taskfleet import app

#: Every raw connection this process (or, before a fork, its parent) opened, with the pid that opened it.
OPENED: list[tuple[Any, int]] = []


def _record(sender: Any, connection: Any, **kwargs: Any) -> None:
    OPENED.append((connection.connection, os.getpid()))


connection_created.connect(_record)

# Opened in the worker's supervisor while it imports the task modules, before it forks: no child may use it.
connection.ensure_connection()
OPENED_AT_IMPORT_BY = os.getpid()


@app.task
def connection_report() -> dict[str, Any]:
    """Whether the task started with a connection opened in another process, and how many this one opened."""
    raw = connection.connection
    inherited = raw is not None and not any(r is raw and pid == os.getpid() for r, pid in OPENED)
    connection.ensure_connection()
    return {"pid": os.getpid(), "import_pid": OPENED_AT_IMPORT_BY, "inherited": inherited,
            "opened_here": sum(1 for _, pid in OPENED if pid == os.getpid())}


@app.task
def fail_after_query() -> None:
    """Uses the connection, then fails: the worker closes the connection after it, whatever its age."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    raise RuntimeError("failed after a query")
