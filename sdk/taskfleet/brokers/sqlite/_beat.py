"""The beat store in the SQLite broker's file: a leader row with an expiry, a cursor row per entry and a claim row
per sent tick (tables ``tf_beat_leader``, ``tf_beat_cursors``, ``tf_beat_claims``, keyed by namespace).

A fire is one ``BEGIN IMMEDIATE`` transaction: check that this replica holds an unexpired lease, the tick is
unclaimed and after the cursor, then store the message (the broker's own enqueue statement), the claim and the
cursor. The write lock is taken before the checks, so no other replica can change the lease, claim or cursor in
between: a tick is sent at most once even by two replicas that both believe they lead, and never lost between claim
and enqueue. Lease expiry is judged by the wall clock of the host all replicas share.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Self

from taskfleet._connections.sqlite import SQLiteDatabase
from taskfleet.brokers.base import Broker, check_priority
from taskfleet.brokers.beat_store import BeatStore, Tick
from taskfleet.brokers.sqlite import _schema as broker_sql
from taskfleet.errors import CoordinationError
from taskfleet.settings import BrokerSettings, validate_queue_name

SCHEMA = broker_sql.SCHEMA + """
CREATE TABLE IF NOT EXISTS tf_beat_leader (
    namespace TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tf_beat_cursors (
    namespace TEXT NOT NULL,
    entry TEXT NOT NULL,
    cursor_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, entry)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tf_beat_claims (
    namespace TEXT NOT NULL,
    entry TEXT NOT NULL,
    scheduled_ms INTEGER NOT NULL,
    holder TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, entry, scheduled_ms)
) WITHOUT ROWID;
"""
# Take the lease when free or expired, renew it when ours; a no-op while another holder's lease runs.
_HOLD = """
INSERT INTO tf_beat_leader (namespace, holder, until_ms) VALUES (:ns, :holder, :until)
ON CONFLICT (namespace) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
WHERE tf_beat_leader.holder = excluded.holder OR tf_beat_leader.until_ms <= :now
"""
_LEADS = "SELECT EXISTS (SELECT 1 FROM tf_beat_leader WHERE namespace = ? AND holder = ? AND until_ms > ?)"
_RELEASE = "DELETE FROM tf_beat_leader WHERE namespace = ? AND holder = ?"
_PRUNE_CLAIMS = "DELETE FROM tf_beat_claims WHERE namespace = ? AND expires_at_ms <= ?"
_CURSOR = "SELECT cursor_ms FROM tf_beat_cursors WHERE namespace = ? AND entry = ?"
_START_CURSOR = "INSERT OR IGNORE INTO tf_beat_cursors (namespace, entry, cursor_ms) VALUES (?, ?, ?)"
_MOVE_CURSOR = """
INSERT INTO tf_beat_cursors (namespace, entry, cursor_ms) VALUES (?, ?, ?)
ON CONFLICT (namespace, entry) DO UPDATE SET cursor_ms = MAX(cursor_ms, excluded.cursor_ms)
"""
_CLAIMED = "SELECT EXISTS (SELECT 1 FROM tf_beat_claims WHERE namespace = ? AND entry = ? AND scheduled_ms = ?)"
_CLAIM = """
INSERT INTO tf_beat_claims (namespace, entry, scheduled_ms, holder, expires_at_ms) VALUES (?, ?, ?, ?, ?)
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


class SQLiteBeatStore(BeatStore):
    """A ``BeatStore`` in the SQLite file of ``settings.url`` (its own connection)."""

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, holder: str, lease_s: float, claim_ttl_s: float) -> Self:
        """A store with its own connection to ``broker``'s server (``BeatStore.for_broker``)."""
        return cls(broker.settings, namespace=namespace, holder=holder, lease_s=lease_s, claim_ttl_s=claim_ttl_s)

    def __init__(self, settings: BrokerSettings, *, namespace: str, holder: str, lease_s: float,
                 claim_ttl_s: float) -> None:
        self.holder = holder
        self.lease_s = lease_s
        self._ns = namespace
        self._lease_ms = int(lease_s * 1000)
        self._claim_ttl_ms = int(claim_ttl_s * 1000)
        self._db = SQLiteDatabase(settings.url, schema=SCHEMA, what="sqlite beat store", error=CoordinationError)

    def hold_lease(self) -> bool:
        with self._db.write("hold the lease") as conn:
            now = _now_ms()
            conn.execute(_HOLD, {"ns": self._ns, "holder": self.holder, "until": now + self._lease_ms, "now": now})
            conn.execute(_PRUNE_CLAIMS, (self._ns, now))
            return bool(conn.execute(_LEADS, (self._ns, self.holder, now)).fetchone()[0])

    def release_lease(self) -> None:
        with self._db.write("release the lease") as conn:
            conn.execute(_RELEASE, (self._ns, self.holder))

    def cursors(self, entries: Sequence[str]) -> dict[str, int | None]:
        with self._db.read("read cursors") as conn:
            out: dict[str, int | None] = {}
            for entry in entries:
                row = conn.execute(_CURSOR, (self._ns, entry)).fetchone()
                out[entry] = None if row is None else int(row[0])
        return out

    def start_cursor(self, entry: str, at_ms: int) -> int:
        with self._db.write("start a cursor") as conn:
            conn.execute(_START_CURSOR, (self._ns, entry, at_ms))
            return int(conn.execute(_CURSOR, (self._ns, entry)).fetchone()[0])

    def fire(self, tick: Tick) -> bool:
        m = tick.message
        validate_queue_name(m.queue)
        check_priority(m.priority)
        with self._db.write("fire a tick") as conn:
            now = _now_ms()
            if not conn.execute(_LEADS, (self._ns, self.holder, now)).fetchone()[0]:
                return False
            if conn.execute(_CLAIMED, (self._ns, tick.entry, tick.scheduled_ms)).fetchone()[0]:
                return False
            cursor = conn.execute(_CURSOR, (self._ns, tick.entry)).fetchone()
            if cursor is not None and int(cursor[0]) >= tick.scheduled_ms:
                return False
            conn.execute(broker_sql.ADD_QUEUE, (m.queue,))
            conn.execute(broker_sql.ENQUEUE,
                         (m.queue, m.message_id, m.priority, now + max(0, round(m.delay_s * 1000)), m.data))
            conn.execute(_CLAIM, (self._ns, tick.entry, tick.scheduled_ms, self.holder, now + self._claim_ttl_ms))
            conn.execute(_MOVE_CURSOR, (self._ns, tick.entry, tick.scheduled_ms))
            return True

    def skip(self, entry: str, scheduled_ms: int) -> None:
        with self._db.write("skip a tick") as conn:
            if conn.execute(_LEADS, (self._ns, self.holder, _now_ms())).fetchone()[0]:
                conn.execute(_MOVE_CURSOR, (self._ns, entry, scheduled_ms))

    def close(self) -> None:
        self._db.close()
