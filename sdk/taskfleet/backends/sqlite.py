"""The SQLite result backend (``sqlite:///path/to/taskfleet.db``, the broker's file or another): one row per task
id with its expiry, in table ``tf_results``, and the task's recent state updates in ``tf_result_updates``.

SQLite cannot push a stored record to another process, so ``wait`` polls the row: first after ``MIN_POLL_S``,
backing off to ``MAX_POLL_S``, so a waiter sees a result at most about ``MAX_POLL_S`` (100 ms) after it is stored.
Each poll is one primary-key read that takes no lock (WAL mode). Expired rows are never returned and are deleted
by every ``PRUNE_EVERY``-th ``store``.

Workflows: saved groups in ``tf_groups``; a chord's join in ``tf_chords`` (parts counted, who fired it and whether
that is done) and ``tf_chord_parts`` (one row per header index, so a part recorded twice counts once); recording a
part and deciding is one transaction.

State updates (``updates``, ``wait(on_update=)``) are seen at poll granularity, but none is missed: every record in
a non-final state (STARTED, RETRY, a task's own PROGRESS...) is also appended, numbered, to ``tf_result_updates``
in the same transaction, and a waiter reads what was appended since its last poll. A plain task stores only its
final state, so it writes no update row. Only the newest ``KEEP_UPDATES`` updates of a task are kept: a waiter that
falls further behind than that (polls are at most ``MAX_POLL_S`` apart, so only a task storing thousands of
updates a second) skips the oldest ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from taskfleet._connections.sqlite import SQLiteDatabase
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.backends.joins import ChordPart, JoinAction, JoinDecision, decide, decision
from taskfleet.errors import ResultError, ResultTimeout
from taskfleet.serializers import get_serializer
from taskfleet.settings import BackendSettings
from taskfleet.states import READY_STATES

#: First pause of ``wait`` between reads; doubled after each read up to ``MAX_POLL_S``.
MIN_POLL_S = 0.005
#: Longest pause of ``wait`` between reads: bounds how late a waiter sees a stored result.
MAX_POLL_S = 0.1
#: Expired rows are deleted once every this many stores of a process (an indexed range delete).
PRUNE_EVERY = 256
#: Task ids read per query by ``get_many`` (SQLite allows 32,766 parameters; a smaller chunk keeps each read short).
GET_MANY_CHUNK = 500
#: Non-final records kept per task in ``tf_result_updates`` for waiters that poll (the newest ones).
KEEP_UPDATES = 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS tf_results (
    task_id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tf_results_expiry ON tf_results (expires_at_ms);
CREATE TABLE IF NOT EXISTS tf_groups (
    group_id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tf_chords (
    chord_id TEXT PRIMARY KEY,
    parts INTEGER NOT NULL DEFAULT 0,
    fired_by INTEGER,
    fired_kind TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tf_chord_parts (
    chord_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (chord_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tf_result_updates (
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tf_result_updates_expiry ON tf_result_updates (expires_at_ms);
"""
_STORE = """
INSERT INTO tf_results (task_id, data, expires_at_ms) VALUES (?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET data = excluded.data, expires_at_ms = excluded.expires_at_ms
"""
_PRUNE = (
    "DELETE FROM tf_results WHERE expires_at_ms <= ?",
    "DELETE FROM tf_groups WHERE expires_at_ms <= ?",
    "DELETE FROM tf_chord_parts WHERE chord_id IN (SELECT chord_id FROM tf_chords WHERE expires_at_ms <= ?)",
    "DELETE FROM tf_chords WHERE expires_at_ms <= ?",
    "DELETE FROM tf_result_updates WHERE expires_at_ms <= ?",
)
_SAVE_GROUP = """
INSERT INTO tf_groups (group_id, data, expires_at_ms) VALUES (?, ?, ?)
ON CONFLICT (group_id) DO UPDATE SET data = excluded.data, expires_at_ms = excluded.expires_at_ms
"""
_GET_GROUP = "SELECT data FROM tf_groups WHERE group_id = ? AND expires_at_ms > ?"
_FORGET_GROUP = "DELETE FROM tf_groups WHERE group_id = ?"
_JOIN = """
INSERT INTO tf_chords (chord_id, expires_at_ms) VALUES (?, ?)
ON CONFLICT (chord_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms
"""
_ADD_PART = "INSERT OR IGNORE INTO tf_chord_parts (chord_id, idx, data) VALUES (?, ?, ?)"
_COUNT_PART = "UPDATE tf_chords SET parts = parts + 1 WHERE chord_id = ?"
_JOIN_STATE = "SELECT parts, fired_by, fired_kind, done FROM tf_chords WHERE chord_id = ?"
_PART = "SELECT data FROM tf_chord_parts WHERE chord_id = ? AND idx = ?"
_PARTS = "SELECT idx, data FROM tf_chord_parts WHERE chord_id = ? ORDER BY idx"
_CLAIM = "UPDATE tf_chords SET fired_by = ?, fired_kind = ? WHERE chord_id = ?"
_FIRED = "UPDATE tf_chords SET done = 1 WHERE chord_id = ?"
_GET = "SELECT data FROM tf_results WHERE task_id = ? AND expires_at_ms > ?"
_FORGET = "DELETE FROM tf_results WHERE task_id = ?"
_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM tf_result_updates WHERE task_id = ?"
_LOG_UPDATE = "INSERT INTO tf_result_updates (task_id, seq, data, expires_at_ms) VALUES (?, ?, ?, ?)"
_TRIM_UPDATES = "DELETE FROM tf_result_updates WHERE task_id = ? AND seq <= ?"
_UPDATES_SINCE = """
SELECT seq, data FROM tf_result_updates WHERE task_id = ? AND seq > ? AND expires_at_ms > ? ORDER BY seq
"""
_FORGET_UPDATES = "DELETE FROM tf_result_updates WHERE task_id = ?"


def _now_ms() -> int:
    return int(time.time() * 1000)


class SQLiteBackend(ResultBackend):
    """A ``ResultBackend`` in one SQLite file. Thread-safe; each process opens its own connection on first use."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._serializer = get_serializer(settings.serializer)
        self._expires_ms = max(1, round(settings.result_expires_s * 1000))
        self._db = SQLiteDatabase(settings.url, schema=SCHEMA, what="sqlite result backend", error=ResultError)
        self._stores = 0

    def store(self, record: ResultRecord) -> None:
        """Save ``record`` for ``result_expires_s`` (replacing the previous state); waiters see it on their next
        read. A non-final record is also appended to the task's updates (module notes)."""
        data = record.encode(self._serializer)
        self._stores += 1
        with self._db.write("store") as conn:
            now = _now_ms()
            expires_at_ms = now + self._expires_ms
            conn.execute(_STORE, (record.task_id, data, expires_at_ms))
            if record.state not in READY_STATES:
                seq = int(conn.execute(_LAST_SEQ, (record.task_id,)).fetchone()[0]) + 1
                conn.execute(_LOG_UPDATE, (record.task_id, seq, data, expires_at_ms))
                if seq > KEEP_UPDATES:
                    conn.execute(_TRIM_UPDATES, (record.task_id, seq - KEEP_UPDATES))
            if self._stores % PRUNE_EVERY == 1:
                for statement in _PRUNE:
                    conn.execute(statement, (now,))

    def get(self, task_id: str) -> ResultRecord | None:
        """The stored record of ``task_id``, or None when there is none (pending, unknown or expired)."""
        with self._db.read("get") as conn:
            row = conn.execute(_GET, (task_id, _now_ms())).fetchone()
        if row is None:
            return None
        return ResultRecord.decode(bytes(row[0]), accept=self.settings.accept_content)

    def get_many(self, task_ids: Sequence[str]) -> list[ResultRecord | None]:
        """The stored records of ``task_ids`` (None where there is none): one read per ``GET_MANY_CHUNK`` ids."""
        found: dict[str, bytes] = {}
        with self._db.read("get") as conn:
            for start in range(0, len(task_ids), GET_MANY_CHUNK):
                chunk = list(task_ids[start:start + GET_MANY_CHUNK])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT task_id, data FROM tf_results WHERE task_id IN ({marks}) AND expires_at_ms > ?"
                found.update((row[0], bytes(row[1])) for row in conn.execute(query, (*chunk, _now_ms())))
        return [None if task_id not in found else self._decode(found[task_id]) for task_id in task_ids]

    def wait(self, task_id: str, timeout_s: float | None,
             on_update: Callable[[ResultRecord], None] | None = None) -> ResultRecord:
        """Block until ``task_id`` is ready (SUCCESS, FAILURE or REVOKED) and return its record, polling (see the
        module docstring); ``timeout_s`` None waits forever. Raises ``ResultTimeout`` when the time runs out. With
        ``on_update``, each update is passed to it first (``updates``); without, each poll is one read."""
        if on_update is not None:
            return super().wait(task_id, timeout_s, on_update)
        deadline = _deadline(timeout_s)
        pause_s = MIN_POLL_S
        while True:
            record = self.get(task_id)
            if record is not None and record.ready:
                return record
            pause_s = _pause(task_id, timeout_s, deadline, pause_s)

    def updates(self, task_id: str, timeout_s: float | None) -> Iterator[ResultRecord]:
        """Yield ``task_id``'s records as they are stored, until a ready one (``ResultBackend.updates``): the
        stored one, then at each poll the updates appended since the last (module docstring), then the final one.
        Raises ``ResultTimeout`` when ``timeout_s`` (None: forever) runs out."""
        deadline = _deadline(timeout_s)
        with self._db.read("wait") as conn:
            # The update count is read before the record, so an update stored in between is yielded (as the
            # record) and then skipped as a repeat, never missed.
            since = int(conn.execute(_LAST_SEQ, (task_id,)).fetchone()[0])
            row = conn.execute(_GET, (task_id, _now_ms())).fetchone()
        last = None if row is None else bytes(row[0])
        if last is not None:
            record = self._decode(last)
            yield record
            if record.ready:
                return
        pause_s = MIN_POLL_S
        while True:
            pause_s = _pause(task_id, timeout_s, deadline, pause_s)
            with self._db.read("wait") as conn:
                # The record first: every update stored before it is then in the updates read next.
                row = conn.execute(_GET, (task_id, _now_ms())).fetchone()
                appended = conn.execute(_UPDATES_SINCE, (task_id, since, _now_ms())).fetchall()
            for seq, raw in appended:
                since, data = int(seq), bytes(raw)
                if data != last:
                    last = data
                    pause_s = MIN_POLL_S
                    yield self._decode(data)
            if row is not None and bytes(row[0]) != last:
                record = self._decode(bytes(row[0]))
                if record.ready:  # a non-final record is yielded from the updates, in its place
                    yield record
                    return

    def forget(self, task_id: str) -> None:
        """Delete the stored record of ``task_id``."""
        with self._db.write("forget") as conn:
            conn.execute(_FORGET, (task_id,))
            conn.execute(_FORGET_UPDATES, (task_id,))

    def save_group(self, group_id: str, data: Mapping[str, Any]) -> None:
        with self._db.write("save_group") as conn:
            conn.execute(_SAVE_GROUP, (group_id, self._serializer.dumps(dict(data)), _now_ms() + self._expires_ms))

    def restore_group(self, group_id: str) -> dict[str, Any] | None:
        with self._db.read("restore_group") as conn:
            row = conn.execute(_GET_GROUP, (group_id, _now_ms())).fetchone()
        return None if row is None else dict(self._serializer.loads(bytes(row[0])))

    def forget_group(self, group_id: str) -> None:
        with self._db.write("forget_group") as conn:
            conn.execute(_FORGET_GROUP, (group_id,))

    def chord_part(self, chord_id: str, index: int, size: int, part: ChordPart) -> JoinDecision:
        """Record and decide in one ``BEGIN IMMEDIATE`` transaction (see ``taskfleet.backends.joins``)."""
        serializer = self._serializer
        with self._db.write("chord_part") as conn:
            conn.execute(_JOIN, (chord_id, _now_ms() + self._expires_ms))
            if conn.execute(_ADD_PART, (chord_id, index, part.encode(serializer))).rowcount == 1:
                conn.execute(_COUNT_PART, (chord_id,))
            count, fired_by, fired_kind, done = conn.execute(_JOIN_STATE, (chord_id,)).fetchone()
            mine = ChordPart.decode(bytes(conn.execute(_PART, (chord_id, index)).fetchone()[0]), serializer)
            action, claim = decide(index=index, size=size, mine=mine, count=count, fired_by=fired_by,
                                   fired_kind=fired_kind, done=bool(done))
            if claim is not None:
                conn.execute(_CLAIM, (index, claim, chord_id))
            parts = {index: mine}
            if action is JoinAction.FIRE:
                parts = {i: ChordPart.decode(bytes(data), serializer)
                         for i, data in conn.execute(_PARTS, (chord_id,)).fetchall()}
        return decision(action, parts, index)

    def chord_fired(self, chord_id: str) -> None:
        with self._db.write("chord_fired") as conn:
            conn.execute(_FIRED, (chord_id,))

    def ping(self) -> None:
        """Raises ``BrokerConnectionError`` when the file cannot be opened (see ``SQLiteDatabase.ping``)."""
        self._db.ping()

    def close(self) -> None:
        """Close this process's connection."""
        self._db.close()

    def _decode(self, data: bytes) -> ResultRecord:
        return ResultRecord.decode(data, accept=self.settings.accept_content)


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)


def _pause(task_id: str, timeout_s: float | None, deadline: float | None, pause_s: float) -> float:
    """Sleep ``pause_s`` (less when the deadline is nearer) and return the next, longer pause; raises
    ``ResultTimeout`` when the deadline has passed."""
    remaining = None if deadline is None else deadline - time.monotonic()
    if remaining is not None and remaining <= 0:
        raise ResultTimeout(f"task {task_id} not ready after {timeout_s}s")
    time.sleep(pause_s if remaining is None else min(pause_s, remaining))
    return min(pause_s * 2, MAX_POLL_S)
