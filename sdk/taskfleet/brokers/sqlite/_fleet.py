"""The fleet store in the SQLite broker's file: a table each for worker records, revocations, control requests,
reply inboxes and their replies, and events, keyed by namespace (tables ``tf_fleet_*``).

- Records and revocations carry their expiry (Unix ms by the host's wall clock, which every process on the file
  shares); readers skip expired rows and writers delete them.
- Control requests get a sequence number; a listener remembers the newest when it opens and polls for later ones
  (every ``MIN_POLL_S``, backing off to ``MAX_POLL_S``). A request is kept ``CONTROL_KEEP_S``, so a listener that
  does not poll for that long misses it.
- A reply is stored only while its inbox's row exists (``close`` deletes both), so late replies are dropped. An
  inbox its client never closed is deleted ``INBOX_KEEP_S`` after its last ``collect``.
- Events are numbered per namespace; each ``emit_events`` is one transaction that inserts the batch and deletes
  what falls below the newest ``events_max_len`` (exact). The cursor is the number of the last event read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Self

from taskfleet._connections.sqlite import SQLiteDatabase
from taskfleet.brokers.base import Broker
from taskfleet.brokers.event_entries import row_cursor
from taskfleet.brokers.fleet_store import ControlListener, FleetStore, ReplyInbox
from taskfleet.brokers.sqlite import _schema as broker_sql
from taskfleet.errors import BrokerError, ControlError, DecodeError
from taskfleet.fleet.revocations import Revocation
from taskfleet.settings import BrokerSettings

#: First pause of a waiting listener, inbox or event reader between polls; doubled up to ``MAX_POLL_S``.
MIN_POLL_S = 0.005
#: Longest pause between polls: bounds how late a waiting reader sees a new row.
MAX_POLL_S = 0.05
#: How long a control request is kept for listeners to read (seconds).
CONTROL_KEEP_S = 60.0
#: How long an inbox outlives its last ``collect`` when its client never closes it (seconds).
INBOX_KEEP_S = 600.0

SCHEMA = broker_sql.SCHEMA + """
CREATE TABLE IF NOT EXISTS tf_fleet_workers (
    namespace TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    record BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, worker_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tf_fleet_revocations (
    namespace TEXT NOT NULL,
    task_id TEXT NOT NULL,
    data BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tf_fleet_control (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    data BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tf_fleet_control_ns ON tf_fleet_control (namespace, seq);
CREATE TABLE IF NOT EXISTS tf_fleet_inboxes (
    address TEXT PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tf_fleet_replies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tf_fleet_replies_address ON tf_fleet_replies (address, seq);
CREATE TABLE IF NOT EXISTS tf_fleet_events (
    namespace TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (namespace, seq)
) WITHOUT ROWID;
"""
_HEARTBEAT = """
INSERT INTO tf_fleet_workers (namespace, worker_id, record, expires_at_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (namespace, worker_id) DO UPDATE SET record = excluded.record, expires_at_ms = excluded.expires_at_ms
"""
_FORGET = "DELETE FROM tf_fleet_workers WHERE namespace = ? AND worker_id = ?"
_PRUNE_WORKERS = "DELETE FROM tf_fleet_workers WHERE namespace = ? AND expires_at_ms <= ?"
_WORKERS = "SELECT record FROM tf_fleet_workers WHERE namespace = ? AND expires_at_ms > ?"
_REVOKE = """
INSERT INTO tf_fleet_revocations (namespace, task_id, data, expires_at_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (namespace, task_id) DO UPDATE SET data = excluded.data, expires_at_ms = excluded.expires_at_ms
"""
_PRUNE_REVOCATIONS = "DELETE FROM tf_fleet_revocations WHERE namespace = ? AND expires_at_ms <= ?"
_REVOCATIONS = "SELECT data FROM tf_fleet_revocations WHERE namespace = ? AND expires_at_ms > ?"
_PUBLISH = "INSERT INTO tf_fleet_control (namespace, data, at_ms) VALUES (?, ?, ?)"
_PRUNE_CONTROL = "DELETE FROM tf_fleet_control WHERE namespace = ? AND at_ms <= ?"
_CONTROL_END = "SELECT COALESCE(MAX(seq), 0) FROM tf_fleet_control"
_CONTROL_AFTER = "SELECT seq, data FROM tf_fleet_control WHERE namespace = ? AND seq > ? ORDER BY seq"
_OPEN_INBOX = "INSERT OR REPLACE INTO tf_fleet_inboxes (address, expires_at_ms) VALUES (?, ?)"
_PRUNE_INBOXES = (
    "DELETE FROM tf_fleet_replies WHERE address IN (SELECT address FROM tf_fleet_inboxes WHERE expires_at_ms <= ?)",
    "DELETE FROM tf_fleet_inboxes WHERE expires_at_ms <= ?",
)
_REPLY = """
INSERT INTO tf_fleet_replies (address, data)
SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM tf_fleet_inboxes WHERE address = ?1)
"""
_ANY_REPLY = "SELECT EXISTS (SELECT 1 FROM tf_fleet_replies WHERE address = ?)"
_TAKE_REPLIES = "DELETE FROM tf_fleet_replies WHERE address = ? RETURNING seq, data"
_CLOSE_INBOX = ("DELETE FROM tf_fleet_replies WHERE address = ?", "DELETE FROM tf_fleet_inboxes WHERE address = ?")
_EVENTS_END = "SELECT COALESCE(MAX(seq), 0) FROM tf_fleet_events WHERE namespace = ?"
_EMIT = "INSERT INTO tf_fleet_events (namespace, seq, data) VALUES (?, ?, ?)"
_TRIM = "DELETE FROM tf_fleet_events WHERE namespace = ? AND seq <= ?"
_EVENTS_AFTER = "SELECT seq, data FROM tf_fleet_events WHERE namespace = ? AND seq > ? ORDER BY seq LIMIT ?"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _poll(check: Callable[[], bool], timeout_s: float) -> None:
    """Call ``check`` until it returns True or ``timeout_s`` seconds have passed, with short, growing sleeps."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    pause_s = MIN_POLL_S
    while not check() and (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(pause_s, remaining))
        pause_s = min(pause_s * 2, MAX_POLL_S)


class _SQLiteListener(ControlListener):
    def __init__(self, db: SQLiteDatabase, namespace: str) -> None:
        self._db = db
        self._ns = namespace
        with db.read("open a control listener") as conn:
            self._after = int(conn.execute(_CONTROL_END).fetchone()[0])

    def receive(self, timeout_s: float) -> list[bytes]:
        got: list[bytes] = []

        def check() -> bool:
            with self._db.read("receive control requests") as conn:
                for seq, data in conn.execute(_CONTROL_AFTER, (self._ns, self._after)).fetchall():
                    got.append(bytes(data))
                    self._after = int(seq)
            return bool(got)

        _poll(check, timeout_s)
        return got

    def close(self) -> None:
        """Nothing is held: a listener is a position in the control table."""


class _SQLiteInbox(ReplyInbox):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.address = uuid.uuid4().hex
        self._db = db
        self._closed = False
        with db.write("open a reply inbox") as conn:
            now = _now_ms()
            conn.execute(_OPEN_INBOX, (self.address, now + int(INBOX_KEEP_S * 1000)))

    def collect(self, timeout_s: float, *, expected: int | None = None) -> list[bytes]:
        if self._closed:
            raise ControlError("collect on a closed reply inbox")
        with self._db.write("collect replies") as conn:
            conn.execute(_OPEN_INBOX, (self.address, _now_ms() + int((timeout_s + INBOX_KEEP_S) * 1000)))
        got: list[bytes] = []

        def check() -> bool:
            with self._db.read("collect replies") as conn:  # idle polls take no write lock
                if not conn.execute(_ANY_REPLY, (self.address,)).fetchone()[0]:
                    return False
            with self._db.write("collect replies") as conn:
                rows = conn.execute(_TAKE_REPLIES, (self.address,)).fetchall()
            got.extend(bytes(data) for _, data in sorted(rows))
            return expected is not None and len(got) >= expected

        _poll(check, timeout_s)
        return got

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._db.write("close a reply inbox") as conn:
            for statement in _CLOSE_INBOX:
                conn.execute(statement, (self.address,))


class SQLiteFleetStore(FleetStore):
    """A ``FleetStore`` in the SQLite file of ``settings.url`` (its own connection; module docstring)."""

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, events_max_len: int) -> Self:
        """A store with its own connection to ``broker``'s file (``FleetStore.for_broker``)."""
        return cls(broker.settings, namespace=namespace, events_max_len=events_max_len)

    def __init__(self, settings: BrokerSettings, *, namespace: str, events_max_len: int) -> None:
        self.namespace = namespace
        self.events_max_len = events_max_len
        self._db = SQLiteDatabase(settings.url, schema=SCHEMA, what="sqlite fleet store", error=BrokerError)

    # -- registry --------------------------------------------------------------------------------------------------

    def heartbeat(self, worker_id: str, record: bytes, *, ttl_s: float) -> None:
        with self._db.write("store a heartbeat") as conn:
            now = _now_ms()
            conn.execute(_PRUNE_WORKERS, (self.namespace, now))
            conn.execute(_HEARTBEAT, (self.namespace, worker_id, record, now + int(ttl_s * 1000)))

    def forget_worker(self, worker_id: str) -> None:
        with self._db.write("forget a worker") as conn:
            conn.execute(_FORGET, (self.namespace, worker_id))

    def workers(self) -> list[bytes]:
        with self._db.read("list workers") as conn:
            return [bytes(row[0]) for row in conn.execute(_WORKERS, (self.namespace, _now_ms())).fetchall()]

    # -- revocations -----------------------------------------------------------------------------------------------

    def add_revocations(self, revocations: Sequence[Revocation]) -> None:
        if not revocations:
            return
        with self._db.write("store revocations") as conn:
            conn.execute(_PRUNE_REVOCATIONS, (self.namespace, _now_ms()))
            conn.executemany(_REVOKE, [(self.namespace, r.task_id, r.to_json(), int(r.expires_at * 1000))
                                       for r in revocations])

    def revocations(self) -> list[Revocation]:
        with self._db.read("list revocations") as conn:
            rows = conn.execute(_REVOCATIONS, (self.namespace, _now_ms())).fetchall()
        out = []
        for (data,) in rows:
            try:
                out.append(Revocation.from_json(bytes(data)))
            except DecodeError:
                continue  # written by something else: not ours to honour
        return out

    # -- control ---------------------------------------------------------------------------------------------------

    def publish_control(self, request: bytes) -> None:
        with self._db.write("publish a control request") as conn:
            now = _now_ms()
            conn.execute(_PRUNE_CONTROL, (self.namespace, now - int(CONTROL_KEEP_S * 1000)))
            conn.execute(_PUBLISH, (self.namespace, request, now))

    def control_listener(self, worker_id: str) -> ControlListener:
        return _SQLiteListener(self._db, self.namespace)

    def reply_inbox(self) -> ReplyInbox:
        with self._db.write("prune reply inboxes") as conn:
            now = _now_ms()
            for statement in _PRUNE_INBOXES:
                conn.execute(statement, (now,))
        return _SQLiteInbox(self._db)

    def reply(self, address: str, reply: bytes) -> None:
        with self._db.write("send a reply") as conn:
            conn.execute(_REPLY, (address, reply))

    # -- events ----------------------------------------------------------------------------------------------------

    def emit_events(self, events: Sequence[bytes]) -> None:
        if not events:
            return
        with self._db.write("emit events") as conn:
            last = int(conn.execute(_EVENTS_END, (self.namespace,)).fetchone()[0])
            conn.executemany(_EMIT, [(self.namespace, last + i, e) for i, e in enumerate(events, start=1)])
            conn.execute(_TRIM, (self.namespace, last + len(events) - self.events_max_len))

    def read_events(self, cursor: str | None, *, limit: int = 1000, timeout_s: float = 0.0) -> tuple[list[bytes], str]:
        after = row_cursor(cursor)
        page: list[tuple[int, bytes]] = []

        def check() -> bool:
            with self._db.read("read events") as conn:
                page.extend((int(seq), bytes(data)) for seq, data in
                            conn.execute(_EVENTS_AFTER, (self.namespace, after, max(0, limit))).fetchall())
            return bool(page) or limit <= 0

        _poll(check, timeout_s)
        if not page:
            return [], str(after)
        return [data for _, data in page], str(page[-1][0])

    def events_end(self) -> str:
        with self._db.read("find the end of the events") as conn:
            return str(int(conn.execute(_EVENTS_END, (self.namespace,)).fetchone()[0]))

    def close(self) -> None:
        self._db.close()
