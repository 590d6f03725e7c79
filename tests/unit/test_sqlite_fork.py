"""A process forked while another thread of its parent is writing to a SQLite database can use that database."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from taskfleet._connections.sqlite import SQLiteDatabase
from taskfleet.errors import BrokerError

CHILD_TIMEOUT_S = 10.0
SCHEMA = "CREATE TABLE IF NOT EXISTS t (n INTEGER);"


def _child_can_write(db: SQLiteDatabase) -> bool:
    pid = os.fork()
    if pid == 0:  # the child: one write, then report through the exit status
        code = 1
        try:
            with db.write("child insert") as conn:
                conn.execute("INSERT INTO t VALUES (-1)")
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # stuck: e.g. on a SQLite mutex another parent thread held at fork() time
    os.waitpid(pid, 0)
    return False


def test_children_forked_during_another_threads_writes_can_write(tmp_path: Path) -> None:
    db = SQLiteDatabase(f"sqlite:///{tmp_path / 'f.db'}", schema=SCHEMA, what="test db", error=BrokerError)
    db.ping()
    stop = threading.Event()

    def keep_writing() -> None:  # what beat's thread does in a worker's supervisor while it forks children
        n = 0
        while not stop.is_set():
            with db.write("insert") as conn:
                conn.execute("INSERT INTO t VALUES (?)", (n,))
            n += 1

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        results = [_child_can_write(db) for _ in range(40)]
    finally:
        stop.set()
        writer.join(timeout=10)
    assert all(results), f"{results.count(False)} of {len(results)} children were locked out of the database"
