"""The SQLite broker (``sqlite:///path/to/taskfleet.db``): the whole broker contract in one database file, for local
development, the CI of users' services and single-node deployments. No server; every process on the host that opens
the same file shares the queues.

Tables and states: ``_schema``. Every state change is one short ``BEGIN IMMEDIATE`` transaction, so two
fetchers never lease the same message, and the database runs in WAL mode so readers never wait for the writer.
``fetch`` has no server to push a wake-up: when nothing is ready it polls, first every ``MIN_POLL_S`` and backing
off to ``MAX_POLL_S``, so an enqueue is seen within about ``MAX_POLL_S`` (50 ms) by an idle consumer; each poll is
one indexed read per queue that takes no lock.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence

from taskfleet._connections.sqlite import SQLiteDatabase
from taskfleet.brokers.base import (
    Broker,
    DeadLetter,
    Delivery,
    Outgoing,
    QueueDepth,
    check_priority,
    fair_order,
    publish_with_retry,
)
from taskfleet.brokers.sqlite import _schema as sql
from taskfleet.errors import BrokerConnectionError, BrokerError
from taskfleet.settings import BrokerSettings, PublishRetry, validate_queue_name
from taskfleet.urls import mask_url

#: First pause of an idle fetch between polls; doubled after each empty poll up to ``MAX_POLL_S``.
MIN_POLL_S = 0.005
#: Longest pause of an idle fetch: bounds how late it sees a new message, a due delayed one or an expired lease.
MAX_POLL_S = 0.05


def now_ms() -> int:
    return int(time.time() * 1000)


class SQLiteBroker(Broker):
    """A ``Broker`` on one SQLite file (``sqlite:///relative.db`` or ``sqlite:////absolute.db``). Thread-safe;
    each process opens its own connection on first use (also after ``fork()``)."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._db = SQLiteDatabase(settings.url, schema=sql.SCHEMA, what="sqlite broker", error=BrokerError)
        self._vt_ms = int(settings.visibility_timeout_s * 1000)
        self._rotation = 0

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._db.path

    # -- publishing ---------------------------------------------------------------------------------------------

    def enqueue(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0,
                retry: PublishRetry | None = None) -> None:
        """Store ``data`` in ``queue`` (one transaction). See ``Broker.enqueue``."""
        self.enqueue_many([Outgoing(queue, message_id, data, priority, delay_s)], retry=retry)

    def enqueue_many(self, items: Sequence[Outgoing], *, retry: PublishRetry | None = None) -> None:
        """Enqueue a batch in one transaction (all or nothing)."""
        for item in items:
            validate_queue_name(item.queue)
            check_priority(item.priority)
        if items:
            publish_with_retry(lambda: self._store(items), retry or self.settings.publish_retry,
                               retry_on=(BrokerConnectionError,), target=f"sqlite broker {mask_url(self.settings.url)}")

    def _store(self, items: Sequence[Outgoing]) -> None:
        with self._db.write("enqueue") as conn:
            now = now_ms()
            conn.executemany(sql.ADD_QUEUE, [(name,) for name in dict.fromkeys(item.queue for item in items)])
            conn.executemany(sql.ENQUEUE, [
                (item.queue, item.message_id, item.priority, now + max(0, round(item.delay_s * 1000)), item.data)
                for item in items
            ])

    # -- consuming ----------------------------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Lease up to ``max_messages`` messages, polling up to ``timeout_s`` seconds while none is ready (see the
        module docstring for the latency). See ``Broker.fetch``."""
        names = fair_order(queues, self._rotation)
        if not names or max_messages < 1:
            return []
        self._rotation += 1
        deadline = time.monotonic() + max(0.0, timeout_s)
        pause_s = MIN_POLL_S
        while True:
            if self._any_ready(names):
                got = self._take(names, max_messages)
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(pause_s, remaining))
            pause_s = min(pause_s * 2, MAX_POLL_S)

    def _any_ready(self, names: Sequence[str]) -> bool:
        """Whether a fetch would find something (a read, so idle consumers never take the write lock)."""
        with self._db.read("fetch") as conn:
            now = now_ms()
            return any(conn.execute(sql.ANY_READY, {"queue": name, "now": now}).fetchone()[0] for name in names)

    def _take(self, names: Sequence[str], want: int) -> list[Delivery]:
        """Queues get an equal share first, then the rest is filled in order (as on Redis)."""
        out: list[Delivery] = []
        with self._db.write("fetch") as conn:
            now = now_ms()
            share = math.ceil(want / len(names))
            for limit in (share, want):
                for name in names:
                    if len(out) < want:
                        self._take_from(conn, name, min(limit, want - len(out)), now, out)
        return out

    def _take_from(self, conn: sqlite3.Connection, queue: str, limit: int, now: int, out: list[Delivery]) -> None:
        rows = conn.execute(sql.TAKE, {"queue": queue, "now": now, "limit": limit}).fetchall()
        for rowid, message_id, data, count in rows:
            if count > self.settings.max_deliveries:
                reason = f"delivered {count - 1} times without an ack (its worker died each time)"
                conn.execute(sql.DELETE_ROW, (rowid,))
                conn.execute(sql.ADD_DEAD, (queue, message_id, reason, data, now / 1000))
                continue
            conn.execute(sql.LEASE, (now + self._vt_ms, count, rowid))
            out.append(Delivery(queue=queue, message_id=message_id, data=bytes(data), delivery_count=count))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete these messages (one transaction). See ``Broker.ack``."""
        self._settle("ack", sql.ACK, deliveries)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again at their old place, delivery not counted. See ``Broker.release``."""
        self._settle("release", sql.RELEASE, deliveries)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again at their old place, delivery counted. See ``Broker.nack``."""
        self._settle("nack", sql.NACK, deliveries)

    def extend(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Renew leases to now + ``visibility_timeout_s``; returns those still held (one transaction). See
        ``Broker.extend``."""
        if not deliveries:
            return []
        with self._db.write("extend") as conn:
            until = now_ms() + self._vt_ms
            return [d for d in deliveries
                    if conn.execute(sql.EXTEND, (until, d.queue, d.message_id, d.delivery_count)).rowcount]

    def _settle(self, action: str, statement: str, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self._db.write(action) as conn:
            conn.executemany(statement, [(d.queue, d.message_id, d.delivery_count) for d in deliveries])

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the in-flight message to its queue's dead letters with ``reason``; no-op if the lease was lost.
        See ``Broker.dead_letter``."""
        with self._db.write("dead_letter") as conn:
            deleted = conn.execute(sql.ACK, (delivery.queue, delivery.message_id, delivery.delivery_count)).rowcount
            if deleted:
                conn.execute(sql.ADD_DEAD, (delivery.queue, delivery.message_id, reason, delivery.data, time.time()))

    # -- inspection and administration -------------------------------------------------------------------------

    def queue_depth(self, queue: str) -> QueueDepth:
        """Exact counts from one read. A message whose lease ran out counts as ready (a fetch would take it), and so
        does a delayed message whose due time has passed: its state follows from its columns, so it is ready without
        a fetch moving it (``due`` is always 0)."""
        with self._db.read("queue_depth") as conn:
            total, in_flight, delayed, dead = conn.execute(sql.DEPTH, {"queue": queue, "now": now_ms()}).fetchone()
        return QueueDepth(ready=total - in_flight - delayed, in_flight=in_flight, delayed=delayed, dead=dead)

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue`` (not removed)."""
        if limit < 1:
            return []
        with self._db.read("dead_letters") as conn:
            rows = conn.execute(sql.DEAD_LETTERS, (queue, limit)).fetchall()
        return [DeadLetter(queue=queue, message_id=mid, reason=reason, data=bytes(data), dead_at=float(dead_at))
                for mid, reason, data, dead_at in rows]

    def requeue_dead_letters(self, queue: str, *, message_ids: Sequence[str] | None = None) -> int:
        """Ready again at priority 0 (the dead-letter table does not keep priorities), oldest first behind what is
        ready now, delivery count reset; an id still stored (enqueued again since) is replaced, as by ``enqueue``.
        One transaction: all selected dead letters move, or none. See ``Broker.requeue_dead_letters``."""
        wanted = None if message_ids is None else set(message_ids)
        with self._db.write("requeue_dead_letters") as conn:
            seqs = [(seq,) for seq, message_id in conn.execute(sql.DEAD_IDS, (queue,)).fetchall()
                    if wanted is None or message_id in wanted]
            if seqs:
                now = now_ms()
                conn.execute(sql.ADD_QUEUE, (queue,))
                conn.executemany(sql.REQUEUE_DEAD, [(now, seq) for (seq,) in seqs])  # in order: rowids keep it
                conn.executemany(sql.DELETE_DEAD, seqs)
        return len(seqs)

    def purge(self, queue: str) -> int:
        """Delete ready and delayed messages of ``queue``; returns how many."""
        with self._db.write("purge") as conn:
            return int(conn.execute(sql.PURGE, (queue,)).rowcount)

    def queues(self) -> list[str]:
        """Names of every queue a message was ever enqueued to in this file, sorted."""
        with self._db.read("queues") as conn:
            return [name for (name,) in conn.execute(sql.QUEUES).fetchall()]

    def ping(self) -> None:
        """Raises ``BrokerConnectionError`` when the file cannot be opened (see ``SQLiteDatabase.ping``)."""
        self._db.ping()

    def close(self) -> None:
        """Close this process's connection."""
        self._db.close()
