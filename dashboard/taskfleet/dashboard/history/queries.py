"""The history's read side: pages of tasks, one task, its timeline, its workflow, outcome buckets and samples.

Every query is an index walk bounded by its ``LIMIT`` (tasks newest first by ``seq``, see ``schema``) or by a time
range of pre-aggregated rows (outcome buckets per minute: a day is 1,440 rows per task name), never a scan of tasks.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from taskfleet.dashboard import model
from taskfleet.dashboard.history import histogram
from taskfleet.dashboard.history.keys import decode_cursor, encode_cursor, seq_after, seq_floor
from taskfleet.dashboard.history.writer import ANY

#: The TaskEntry columns of the tasks table, in TaskEntry's order.
ENTRY_COLUMNS = (
    "task_id", "name", "state", "queue", "worker", "args", "kwargs", "result", "exception", "traceback", "retries",
    "root_id", "parent_id", "eta", "sent_at", "received_at", "started_at", "finished_at", "runtime_s",
    "first_seen_at", "updated_at",
)
_SELECT = ", ".join(f"t.{c}" for c in ENTRY_COLUMNS)
#: The most a page may hold.
MAX_LIMIT = 1000
#: Text shorter than a trigram cannot use the text index: it is looked for in at most this many newest tasks.
SHORT_TEXT_SCAN = 50_000


def entry(values: tuple[Any, ...]) -> model.TaskEntry:
    return model.TaskEntry(**dict(zip(ENTRY_COLUMNS, values, strict=True)))


def _prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def tasks(conn: sqlite3.Connection, query: model.TaskQuery) -> model.TaskPage:
    """One page of tasks matching ``query``, newest first, and the cursor of the next page."""
    limit = max(1, min(query.limit, MAX_LIMIT))
    where: list[str] = []
    params: list[Any] = []
    for column in ("name", "state", "queue", "worker"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"t.{column} = ?")
            params.append(value)
    if query.task_id:
        where.append("t.task_id >= ? AND t.task_id < ?")
        params += [query.task_id, _prefix_end(query.task_id)]
    text = query.text.strip() if query.text else ""
    source, key = "tasks AS t", "t.seq"
    if len(text) >= 3:
        # CROSS JOIN: the text index drives, newest match first (its rowid is the task's seq, and the order and
        # the bounds are put on it so that FTS5 walks its index backwards and stops at the page's end)
        source, key = "tasks_text CROSS JOIN tasks AS t ON t.seq = tasks_text.rowid", "tasks_text.rowid"
        where.append("tasks_text MATCH ?")
        params.append('"' + text.replace('"', '""') + '"')
    elif text:
        source = f"(SELECT * FROM tasks ORDER BY seq DESC LIMIT {SHORT_TEXT_SCAN}) AS t"
        where.append("(instr(t.args, ?) > 0 OR instr(t.kwargs, ?) > 0)")
        params += [text, text]
    if query.since is not None:
        where.append(f"{key} >= ?")
        params.append(seq_floor(query.since))
    if query.until is not None:
        where.append(f"{key} < ?")
        params.append(seq_after(query.until))
    if query.before is not None:
        where.append(f"{key} < ?")
        params.append(decode_cursor(query.before))
    sql = (f"SELECT t.seq, {_SELECT} FROM {source} {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY {key} DESC LIMIT {limit + 1}")
    rows = conn.execute(sql, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1][0]) if more and rows else None
    return model.TaskPage([entry(r[1:]) for r in rows], cursor)


def task(conn: sqlite3.Connection, task_id: str) -> model.TaskEntry | None:
    row = conn.execute(f"SELECT {_SELECT} FROM tasks AS t WHERE t.task_id = ?", (task_id,)).fetchone()
    return entry(row) if row is not None else None


def timeline(conn: sqlite3.Connection, task_id: str) -> list[model.TaskEvent]:
    rows = conn.execute("SELECT type, timestamp, worker, retries, detail FROM timeline WHERE task_id = ? "
                        "ORDER BY timestamp, rowid", (task_id,)).fetchall()
    return [model.TaskEvent(task_id=task_id, type=kind, timestamp=ts, worker=worker, retries=retries, detail=detail)
            for kind, ts, worker, retries, detail in rows]


def children(conn: sqlite3.Connection, task_id: str, *, limit: int = 500) -> list[model.TaskEntry]:
    """The tasks ``task_id`` started (their ``parent_id``), oldest first."""
    rows = conn.execute(f"SELECT {_SELECT} FROM tasks AS t WHERE t.parent_id = ? ORDER BY t.seq LIMIT ?",
                        (task_id, limit)).fetchall()
    return [entry(r) for r in rows]


def workflow(conn: sqlite3.Connection, root_id: str, *, limit: int = 500) -> list[model.TaskEntry]:
    """The root task and every task under it (their ``root_id``), oldest first, at most ``limit``."""
    rows = conn.execute(f"SELECT {_SELECT} FROM tasks AS t WHERE t.root_id = ? OR t.task_id = ? ORDER BY t.seq "
                        "LIMIT ?", (root_id, root_id, limit)).fetchall()
    return [entry(r) for r in rows]


def buckets(conn: sqlite3.Connection, *, since: float, until: float, step_s: float, name: str | None = None,
            queue: str | None = None) -> list[model.Bucket]:
    """Outcomes from ``since`` to ``until`` in buckets of ``step_s`` seconds (at least a minute, whole minutes: the
    stored grain), with runtime percentiles from the merged per-minute histograms. Every bucket of the range is
    there, empty ones included. Reads the pre-added rows of the name, the queue, both or everything."""
    step_min = max(1, round(step_s / 60))
    first, last = math.floor(since / 60), math.ceil(until / 60)
    params = (ANY if name is None else name, ANY if queue is None else queue, first, last)
    count = max(1, math.ceil((last - first) / step_min))
    sums = [[0, 0, 0] for _ in range(count)]
    runs = [0] * count  # histograms as integers (histogram.as_int): summed in C
    for minute, succeeded, failed, retried, runtimes in conn.execute(
            "SELECT minute, succeeded, failed, retried, runtimes FROM outcomes "
            "WHERE name = ? AND queue = ? AND minute >= ? AND minute < ?", params):
        i = (minute - first) // step_min
        sums[i][0] += succeeded
        sums[i][1] += failed
        sums[i][2] += retried
        if runtimes:
            runs[i] += histogram.unpack_int(runtimes)
    result = []
    for i in range(count):
        p50, p95, p99 = histogram.percentiles_of(runs[i], (0.5, 0.95, 0.99))
        result.append(model.Bucket(start=(first + i * step_min) * 60.0, succeeded=sums[i][0], failed=sums[i][1],
                                   retried=sums[i][2], p50_s=p50, p95_s=p95, p99_s=p99))
    return result


def task_names(conn: sqlite3.Connection) -> list[str]:
    """Every task name in the history, sorted (a skip-scan of the name index: one seek per name)."""
    names: list[str] = []
    row = conn.execute("SELECT min(name) FROM tasks").fetchone()
    while row is not None and row[0] is not None:
        names.append(row[0])
        row = conn.execute("SELECT min(name) FROM tasks WHERE name > ?", (row[0],)).fetchone()
    return names


def queue_samples(conn: sqlite3.Connection, *, since: float, until: float,
                  queue: str | None = None) -> list[model.QueueSample]:
    sql = "SELECT at, queue, ready, in_flight, delayed, dead FROM queue_samples WHERE at >= ? AND at <= ?"
    params: list[Any] = [since, until]
    if queue is not None:
        sql += " AND queue = ?"
        params.append(queue)
    return [model.QueueSample(at=at, queue=q, ready=ready, in_flight=in_flight, delayed=delayed, dead=dead)
            for at, q, ready, in_flight, delayed, dead in conn.execute(sql + " ORDER BY at, rowid", params)]


def scale_samples(conn: sqlite3.Connection, *, since: float, until: float, namespace: str | None = None,
                  name: str | None = None) -> list[model.ScaleSample]:
    sql = "SELECT at, namespace, name, replicas, desired, reason FROM scale_samples WHERE at >= ? AND at <= ?"
    params: list[Any] = [since, until]
    if namespace is not None:
        sql += " AND namespace = ?"
        params.append(namespace)
    if name is not None:
        sql += " AND name = ?"
        params.append(name)
    return [model.ScaleSample(at=at, namespace=ns, name=n, replicas=replicas, desired=desired, reason=reason)
            for at, ns, n, replicas, desired, reason in conn.execute(sql + " ORDER BY at, rowid", params)]
