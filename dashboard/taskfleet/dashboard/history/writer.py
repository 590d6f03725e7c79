"""The history's write side: one batch of task events folded into task rows, timeline rows and per-minute outcome
buckets in ONE transaction, with the stream cursor that follows the batch (so a restart neither loses nor counts an
event twice). Nothing is kept between batches: memory stays flat however long the history grows.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from taskfleet.dashboard import model
from taskfleet.dashboard.history import histogram, merge
from taskfleet.dashboard.history.keys import SLOTS, seq_floor

log = logging.getLogger(__name__)

#: Task ids looked up per query when a batch loads its existing rows.
_LOOKUP_CHUNK = 500
_SELECT = f"SELECT seq, {', '.join(merge.COLUMNS)} FROM tasks WHERE task_id IN "
_INSERT = (f"INSERT INTO tasks (seq, {', '.join(merge.COLUMNS)}) "
           f"VALUES (?, {', '.join('?' * len(merge.COLUMNS))})")
_UPDATE = (f"UPDATE tasks SET seq = ?, {', '.join(f'{c} = ?' for c in merge.COLUMNS[1:])} WHERE seq = ?")
#: The name and queue of the outcome rows that add up every name, or every queue.
ANY = "*"
_OUTCOME_OF = {"task-succeeded": 0, "task-failed": 1, "task-retried": 2}


class _Outcome:
    __slots__ = ("counts", "runtimes")

    def __init__(self) -> None:
        self.counts = [0, 0, 0]  # succeeded, failed, retried
        self.runtimes: dict[int, int] = {}


def valid_event(event: Mapping[str, Any]) -> tuple[str, str, float] | None:
    """(type, task id, timestamp) of a task event the history keeps; None for worker events and malformed ones."""
    kind = event.get("type")
    if kind not in merge.STATE_OF:
        if kind is not None and not str(kind).startswith("worker-"):
            log.warning("history: skipping an event of unknown type %r", kind)
        return None
    task_id, timestamp = event.get("uuid"), event.get("timestamp")
    if not isinstance(task_id, str) or not task_id or isinstance(timestamp, bool) \
            or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        log.warning("history: skipping a malformed %s event (uuid %r, timestamp %r)", kind, task_id, timestamp)
        return None
    return str(kind), task_id, float(timestamp)


def apply_batch(conn: sqlite3.Connection, events: Sequence[Mapping[str, Any]], cursor: str | None) -> None:
    """Fold ``events`` (decoded, as docs/events.md shows them) into the history and save ``cursor``, in one
    transaction (the caller's connection, not inside one already)."""
    with transaction(conn):
        _apply(conn, events)
        if cursor is not None:
            save_cursor(conn, cursor)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on an autocommit connection, taken at once (``IMMEDIATE``: no upgrade deadlock)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def load_cursor(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
    return None if row is None else str(row[0])


def save_cursor(conn: sqlite3.Connection, cursor: str) -> None:
    conn.execute("INSERT INTO meta (key, value) VALUES ('cursor', ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (cursor,))


def _apply(conn: sqlite3.Connection, events: Sequence[Mapping[str, Any]]) -> None:
    accepted = [(v, e) for e in events if (v := valid_event(e)) is not None]
    if not accepted:
        return
    rows, old = _load(conn, sorted({task_id for (_, task_id, _), _ in accepted}))
    seen = _timeline_keys(conn, sorted(old))  # a task without a row has no timeline yet
    outcomes: dict[tuple[str, str, int], _Outcome] = {}
    timeline: list[tuple[Any, ...]] = []
    for (kind, task_id, timestamp), event in accepted:
        key = (task_id, timestamp, kind)
        if key in seen:
            continue  # applied already (the stream read again): counted once
        seen.add(key)
        row = rows.get(task_id)
        if row is None:
            row = rows[task_id] = merge.new_row(task_id, timestamp)
        detail = merge.apply(row, kind, timestamp, event)
        worker = event.get("worker")
        timeline.append((task_id, kind, timestamp, worker if isinstance(worker, str) else None,
                         _attempt_of(event, row), detail))
        if kind in _OUTCOME_OF:
            _count(outcomes, kind, timestamp, event, row)
    conn.executemany("INSERT INTO timeline (task_id, type, timestamp, worker, retries, detail) "
                     "VALUES (?, ?, ?, ?, ?, ?)", timeline)
    for task_id, row in rows.items():
        _write(conn, row, old.get(task_id))
    _write_outcomes(conn, outcomes)


def _timeline_keys(conn: sqlite3.Connection, task_ids: list[str]) -> set[tuple[str, float, str]]:
    """(task id, timestamp, type) of the events already kept for ``task_ids``."""
    keys: set[tuple[str, float, str]] = set()
    for start in range(0, len(task_ids), _LOOKUP_CHUNK):
        chunk = task_ids[start:start + _LOOKUP_CHUNK]
        keys.update(conn.execute("SELECT task_id, timestamp, type FROM timeline "
                                 f"WHERE task_id IN ({', '.join('?' * len(chunk))})", chunk))
    return keys


def _attempt_of(event: Mapping[str, Any], row: Mapping[str, Any]) -> int:
    retries = event.get("retries")
    if isinstance(retries, int) and not isinstance(retries, bool):
        return retries
    return max(int(row["attempt"]), 0)


def _load(conn: sqlite3.Connection, task_ids: list[str]) -> tuple[dict[str, dict[str, Any]],
                                                                    dict[str, tuple[int, bool, float]]]:
    """The existing rows of ``task_ids``, and per row (seq, indexed for text search, first_seen_at) as stored."""
    rows: dict[str, dict[str, Any]] = {}
    old: dict[str, tuple[int, bool, float]] = {}
    for start in range(0, len(task_ids), _LOOKUP_CHUNK):
        chunk = task_ids[start:start + _LOOKUP_CHUNK]
        for values in conn.execute(_SELECT + f"({', '.join('?' * len(chunk))})", chunk):
            row = dict(zip(merge.COLUMNS, values[1:], strict=True))
            rows[row["task_id"]] = row
            old[row["task_id"]] = (values[0], row["args"] is not None or row["kwargs"] is not None,
                                   row["first_seen_at"])
    return rows, old


def _free_seq(conn: sqlite3.Connection, timestamp: float) -> int:
    base = seq_floor(timestamp)
    while True:
        (top,) = conn.execute("SELECT max(seq) FROM tasks WHERE seq BETWEEN ? AND ?",
                              (base, base + SLOTS - 1)).fetchone()
        if top is None:
            return base
        if top < base + SLOTS - 1:
            return int(top) + 1
        base += SLOTS  # 1024 tasks in one microsecond: the next one's slots


def _write(conn: sqlite3.Connection, row: dict[str, Any], old: tuple[int, bool, float] | None) -> None:
    values = [row[c] for c in merge.COLUMNS]
    texts = row["args"] is not None or row["kwargs"] is not None
    if old is None:
        seq = _free_seq(conn, row["first_seen_at"])
        conn.execute(_INSERT, [seq, *values])
        if texts:
            conn.execute("INSERT INTO tasks_text (rowid, args, kwargs) VALUES (?, ?, ?)",
                         (seq, row["args"], row["kwargs"]))
        return
    old_seq, indexed, old_first = old
    seq = old_seq
    if row["first_seen_at"] < old_first and seq_floor(row["first_seen_at"]) < seq_floor(old_first):
        seq = _free_seq(conn, row["first_seen_at"])  # an earlier event arrived late: the task moves back in order
    if indexed and seq != old_seq:
        conn.execute("INSERT INTO tasks_text (tasks_text, rowid, args, kwargs) "
                     "SELECT 'delete', seq, args, kwargs FROM tasks WHERE seq = ?", (old_seq,))
    conn.execute(_UPDATE, [seq, *values[1:], old_seq])
    if texts and (not indexed or seq != old_seq):
        conn.execute("INSERT INTO tasks_text (rowid, args, kwargs) VALUES (?, ?, ?)",
                     (seq, row["args"], row["kwargs"]))


def _count(outcomes: dict[tuple[str, str, int], _Outcome], kind: str, timestamp: float,
           event: Mapping[str, Any], row: Mapping[str, Any]) -> None:
    name = event.get("name") if isinstance(event.get("name"), str) else row["name"]
    queue = event.get("queue") if isinstance(event.get("queue"), str) else row["queue"]
    minute = int(timestamp // 60)
    runtime = event.get("runtime")
    b = None
    if kind != "task-retried" and isinstance(runtime, (int, float)) and not isinstance(runtime, bool):
        b = histogram.bin_of(float(runtime))
    name, queue = name or "", queue or ""
    for key in ((name, queue, minute), (name, ANY, minute), (ANY, queue, minute), (ANY, ANY, minute)):
        outcome = outcomes.get(key)
        if outcome is None:
            outcome = outcomes[key] = _Outcome()
        outcome.counts[_OUTCOME_OF[kind]] += 1
        if b is not None:
            outcome.runtimes[b] = outcome.runtimes.get(b, 0) + 1


def _write_outcomes(conn: sqlite3.Connection, outcomes: Mapping[tuple[str, str, int], _Outcome]) -> None:
    for key, outcome in outcomes.items():
        stored = conn.execute("SELECT runtimes FROM outcomes WHERE name = ? AND queue = ? AND minute = ?",
                              key).fetchone()
        runtimes = histogram.as_int(outcome.runtimes)
        if stored is not None:
            runtimes += histogram.unpack_int(stored[0])
        succeeded, failed, retried = outcome.counts
        conn.execute(
            "INSERT INTO outcomes (name, queue, minute, succeeded, failed, retried, runtimes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, queue, minute) DO UPDATE SET "
            "succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed, "
            "retried = retried + excluded.retried, runtimes = excluded.runtimes",
            (*key, succeeded, failed, retried, histogram.pack_int(runtimes)))


def record_queue_samples(conn: sqlite3.Connection, samples: Sequence[model.QueueSample]) -> None:
    with transaction(conn):
        conn.executemany("INSERT INTO queue_samples (at, queue, ready, in_flight, delayed, dead) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         [(s.at, s.queue, s.ready, s.in_flight, s.delayed, s.dead) for s in samples])


def record_scale_samples(conn: sqlite3.Connection, samples: Sequence[model.ScaleSample]) -> None:
    with transaction(conn):
        conn.executemany("INSERT INTO scale_samples (at, namespace, name, replicas, desired, reason) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         [(s.at, s.namespace, s.name, s.replicas, s.desired, s.reason) for s in samples])
