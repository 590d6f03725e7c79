"""The tables of the SQLite broker (``tf_messages``, ``tf_dead``, ``tf_queues``) and the SQL that reads them.

A message's state follows from two columns, so it is never in two states at once:

- *delayed*: not leased and ``ready_at_ms`` in the future;
- *ready*: not leased and due, or leased with the lease run out (at-least-once: it is delivered again);
- *in-flight*: ``lease_until_ms`` in the future.

Fetch order is ``priority DESC, ready_at_ms, rowid``: highest priority first, then the order in which messages
became ready (a due delayed message queues behind what was ready before it; a released or nacked one keeps its
place at the head). The fetch index serves that order per queue. Times are Unix milliseconds by the clock of the
process that writes them: every process shares one host, so one clock.

A lease is fenced by ``deliveries``: a worker settles a message only while it is leased with the delivery count
it was given, so a worker whose lease ran out (and whose message went to another) changes nothing.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS tf_messages (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ready_at_ms INTEGER NOT NULL,
    lease_until_ms INTEGER,
    deliveries INTEGER NOT NULL DEFAULT 0,
    data BLOB NOT NULL,
    UNIQUE (queue, id)
);
CREATE INDEX IF NOT EXISTS tf_messages_fetch ON tf_messages (queue, priority DESC, ready_at_ms);
CREATE TABLE IF NOT EXISTS tf_dead (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    data BLOB NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tf_dead_queue ON tf_dead (queue, seq);
CREATE TABLE IF NOT EXISTS tf_queues (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""

# Re-enqueueing an id replaces the message: a stale in-flight copy loses its lease (its ack becomes a no-op) and
# the delivery count is kept, as on Redis.
ENQUEUE = """
INSERT INTO tf_messages (queue, id, priority, ready_at_ms, lease_until_ms, deliveries, data)
VALUES (?, ?, ?, ?, NULL, 0, ?)
ON CONFLICT (queue, id) DO UPDATE SET
    priority = excluded.priority, ready_at_ms = excluded.ready_at_ms, lease_until_ms = NULL, data = excluded.data
"""
ADD_QUEUE = "INSERT OR IGNORE INTO tf_queues (name) VALUES (?)"

_READY = "queue = :queue AND ready_at_ms <= :now AND (lease_until_ms IS NULL OR lease_until_ms <= :now)"
ANY_READY = f"SELECT EXISTS (SELECT 1 FROM tf_messages WHERE {_READY})"
TAKE = f"""
SELECT rowid, id, data, deliveries + 1 FROM tf_messages WHERE {_READY}
ORDER BY priority DESC, ready_at_ms, rowid LIMIT :limit
"""
LEASE = "UPDATE tf_messages SET lease_until_ms = ?, deliveries = ? WHERE rowid = ?"
DELETE_ROW = "DELETE FROM tf_messages WHERE rowid = ?"

_LEASED = "queue = ? AND id = ? AND deliveries = ? AND lease_until_ms IS NOT NULL"
ACK = f"DELETE FROM tf_messages WHERE {_LEASED}"
NACK = f"UPDATE tf_messages SET lease_until_ms = NULL WHERE {_LEASED}"
RELEASE = f"UPDATE tf_messages SET lease_until_ms = NULL, deliveries = deliveries - 1 WHERE {_LEASED}"
EXTEND = f"UPDATE tf_messages SET lease_until_ms = ? WHERE {_LEASED}"

ADD_DEAD = "INSERT INTO tf_dead (queue, message_id, reason, data, dead_at) VALUES (?, ?, ?, ?, ?)"
DEAD_LETTERS = "SELECT message_id, reason, data, dead_at FROM tf_dead WHERE queue = ? ORDER BY seq LIMIT ?"
DEAD_IDS = "SELECT seq, message_id FROM tf_dead WHERE queue = ? ORDER BY seq"
# A dead letter back to ready as a fresh message: delivery count 0, priority 0 (tf_dead does not keep it), ready now
# (behind what is ready already). An id still stored (enqueued again since) is replaced, as by ENQUEUE.
REQUEUE_DEAD = """
INSERT INTO tf_messages (queue, id, priority, ready_at_ms, lease_until_ms, deliveries, data)
SELECT queue, message_id, 0, ?, NULL, 0, data FROM tf_dead WHERE seq = ?
ON CONFLICT (queue, id) DO UPDATE SET
    priority = 0, ready_at_ms = excluded.ready_at_ms, lease_until_ms = NULL, deliveries = 0, data = excluded.data
"""
DELETE_DEAD = "DELETE FROM tf_dead WHERE seq = ?"

DEPTH = """
SELECT
    COUNT(*),
    COALESCE(SUM(lease_until_ms > :now), 0),
    COALESCE(SUM(lease_until_ms IS NULL AND ready_at_ms > :now), 0),
    (SELECT COUNT(*) FROM tf_dead WHERE queue = :queue)
FROM tf_messages WHERE queue = :queue
"""
# Ready and delayed messages; leased ones (even with an expired lease) stay with their workers, as on Redis.
PURGE = "DELETE FROM tf_messages WHERE queue = ? AND lease_until_ms IS NULL"
QUEUES = "SELECT name FROM tf_queues ORDER BY name"
