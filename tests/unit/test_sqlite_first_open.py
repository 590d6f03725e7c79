"""Processes that open one new SQLite database at the same moment all get to use it: none fails with "database is
locked" while another creates the schema (CI saw two worker children do this on a fresh results file, and the
results they could not store waited a whole visibility timeout to run again)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from taskfleet._connections.sqlite import SQLiteDatabase
from taskfleet.errors import BrokerError

#: Several tables, so that creating the schema takes long enough for the openers to overlap.
SCHEMA = "\n".join(f"CREATE TABLE IF NOT EXISTS t{i} (n INTEGER);" for i in range(20))
OPENERS = 12
ROUNDS = 30


def _open_and_write(path: str, index: int, start: multiprocessing.synchronize.Barrier,
                    failures: multiprocessing.Queue) -> None:
    """Open (half of them with a read first, as a worker's readiness check does), then write."""
    db = SQLiteDatabase(f"sqlite:///{path}", schema=SCHEMA, what="test db", error=BrokerError)
    start.wait()
    try:
        if index % 2:
            db.ping()
        with db.write("insert") as conn:
            conn.execute("INSERT INTO t0 VALUES (?)", (os.getpid(),))
    except Exception as exc:
        failures.put(repr(exc))


def test_processes_opening_a_new_database_at_once_all_write_to_it(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    failures: multiprocessing.Queue = ctx.Queue()
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"new-{round_}.db")
        start = ctx.Barrier(OPENERS)
        openers = [ctx.Process(target=_open_and_write, args=(path, i, start, failures)) for i in range(OPENERS)]
        for p in openers:
            p.start()
        for p in openers:
            p.join(timeout=30)
    seen = []
    while not failures.empty():
        seen.append(failures.get())
    assert seen == []
