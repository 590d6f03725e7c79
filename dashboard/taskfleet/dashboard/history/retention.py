"""Retention: what the history drops, by age and by count, in short transactions of ``CHUNK`` tasks each."""

from __future__ import annotations

import sqlite3

from taskfleet.dashboard.history.keys import seq_floor
from taskfleet.dashboard.history.writer import transaction

#: Tasks dropped per transaction.
CHUNK = 2000


def prune(conn: sqlite3.Connection, *, now: float, retention_s: float, max_tasks: int) -> int:
    """Drop what is older than ``now - retention_s`` or beyond the newest ``max_tasks`` tasks; tasks dropped."""
    cutoff = now - retention_s
    bound = seq_floor(cutoff)
    row = conn.execute("SELECT seq FROM tasks ORDER BY seq DESC LIMIT 1 OFFSET ?", (max_tasks,)).fetchone()
    if row is not None:
        bound = max(bound, int(row[0]) + 1)
    dropped = 0
    while True:
        with transaction(conn):
            rows = conn.execute("SELECT seq, task_id, args, kwargs FROM tasks WHERE seq < ? ORDER BY seq LIMIT ?",
                                (bound, CHUNK)).fetchall()
            if not rows:
                break
            conn.executemany("DELETE FROM timeline WHERE task_id = ?", [(r[1],) for r in rows])
            conn.executemany("INSERT INTO tasks_text (tasks_text, rowid, args, kwargs) VALUES ('delete', ?, ?, ?)",
                             [(r[0], r[2], r[3]) for r in rows if r[2] is not None or r[3] is not None])
            conn.execute("DELETE FROM tasks WHERE seq <= ?", (rows[-1][0],))
            dropped += len(rows)
    with transaction(conn):
        conn.execute("DELETE FROM outcomes WHERE minute < ?", (int(cutoff // 60),))
        conn.execute("DELETE FROM queue_samples WHERE at < ?", (cutoff,))
        conn.execute("DELETE FROM scale_samples WHERE at < ?", (cutoff,))
    return dropped
