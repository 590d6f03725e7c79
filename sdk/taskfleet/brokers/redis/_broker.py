"""The Redis broker: every state change is one Lua script, so a message is never in two states at once.

Per queue ``Q`` the keys share the ``{Q}`` hash tag (named by ``_keys.QueueKeys``; what each holds:
``lua/common.lua``). Ready messages sit in a sorted set ranked by ``(9 - priority) * 2**40 + seq``, so ``ZPOPMIN``
gives priority order and FIFO within a priority; leases and delayed messages are sorted sets scored by the server
clock in milliseconds. ``fetch`` promotes due messages,
reclaims expired leases and pops in one script; when nothing is ready it blocks on ``BLPOP`` of the queues' wake-up
lists (pushed by every enqueue), so an idle consumer wakes as soon as a message arrives. Needs Redis >= 6.0.

The hot paths (enqueue, fetch, ack and the other lease changes) send commands packed ahead of time on
``HotConnections`` and call their scripts by sha, loading them on the first NOSCRIPT; a blocking fetch sends its
``BLPOP`` and the fetch script that follows it in one write, so a woken consumer has its messages without another
round trip.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson
from redis.exceptions import NoScriptError, RedisError, ResponseError

from taskfleet._connections.redis import (
    CONNECTION_ERRORS,
    EvalSha,
    HotConnections,
    Packed,
    connect_redis,
    pack,
    translate_errors,
)
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
from taskfleet.brokers.redis._keys import QUEUES_KEY, QueueKeys
from taskfleet.brokers.redis._scripts import load_script, script_source
from taskfleet.errors import BrokerError
from taskfleet.settings import BrokerSettings, PublishRetry
from taskfleet.urls import mask_secrets, mask_url

#: Longest single BLPOP while idle: bounds how late a delayed message or an expired lease is noticed.
MAX_BLOCK_S = 1.0
#: Idle pooled connections are PINGed before reuse after this long, so a restarted server is noticed early.
HEALTH_CHECK_INTERVAL_S = 30
_MAX_KEY_CACHE = 256
#: Messages per script call in ``enqueue_many``: bounds how long one call holds the server (about 2 ms).
ENQUEUE_CHUNK = 500
#: Fetch commands kept packed (one per queue order and batch size a consumer asks for).
_MAX_FETCH_CACHE = 64
#: Dead-letter records read per LRANGE by ``requeue_dead_letters``.
REQUEUE_PAGE = 100
#: Message bytes moved per script call by ``requeue_dead_letters`` (at least one message): bounds how long one call
#: holds the server.
REQUEUE_CHUNK_BYTES = 4 * 2**20


class RedisBroker(Broker):
    """A ``Broker`` on one Redis server (``redis://``, ``rediss://`` or ``unix://`` URL). Thread-safe: redis-py's
    pool gives each call its own connection."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._masked_url = mask_url(settings.url)
        # A blocking fetch must never outlive the socket timeout, or a healthy idle wait would look like an outage.
        self._max_block_s = min(MAX_BLOCK_S, settings.socket_timeout_s / 2)
        self._vt_ms = int(settings.visibility_timeout_s * 1000)
        self._client = connect_redis(settings.url, socket_timeout_s=settings.socket_timeout_s,
                                     health_check_interval_s=HEALTH_CHECK_INTERVAL_S, error=BrokerError)
        self._hot = HotConnections(self._client)
        self._enqueue = EvalSha(script_source("enqueue"))
        self._fetch = EvalSha(script_source("fetch"))
        self._settle = EvalSha(script_source("settle"))
        self._enqueue_prefixes: dict[str, Packed] = {}
        self._fetch_commands: dict[tuple[Any, ...], tuple[bytes, list[str]]] = {}
        #: Queue sets whose last fetch came back short: when it returned and its ms until the next delayed message.
        self._short_fetches: dict[frozenset[str], tuple[float, int]] = {}
        self._dead_letter = load_script(self._client, "dead_letter")
        self._depth = load_script(self._client, "depth")
        self._purge = load_script(self._client, "purge")
        self._requeue_dead = load_script(self._client, "requeue_dead")
        self._keys: dict[str, QueueKeys] = {}
        self._rotation = 0

    # -- publishing ---------------------------------------------------------------------------------------------

    def enqueue(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0,
                retry: PublishRetry | None = None) -> None:
        """Store ``data`` in ``queue`` (one round trip). See ``Broker.enqueue``."""
        command = self._enqueue_prefix(queue).plus_packed(4, _packed_message(message_id, data, priority, delay_s))
        self._publish(lambda: self._call(command), retry)

    def enqueue_many(self, items: Sequence[Outgoing], *, retry: PublishRetry | None = None) -> None:
        """Enqueue a batch in one pipelined round trip: one script call per queue and ``ENQUEUE_CHUNK`` messages
        (not atomic as a whole; each message is stored on its own)."""
        by_queue: dict[str, list[bytes]] = {}
        for item in items:
            by_queue.setdefault(item.queue, []).append(
                _packed_message(item.message_id, item.data, item.priority, item.delay_s)
            )
        commands: list[bytes] = []
        for queue, messages in by_queue.items():
            prefix = self._enqueue_prefix(queue)
            for start in range(0, len(messages), ENQUEUE_CHUNK):
                chunk = messages[start:start + ENQUEUE_CHUNK]
                commands.append(prefix.plus_packed(4 * len(chunk), b"".join(chunk)))
        if commands:
            payload = b"".join(commands)
            self._publish(lambda: self._call(payload, len(commands)), retry)

    def _enqueue_prefix(self, queue: str) -> Packed:
        prefix = self._enqueue_prefixes.get(queue)
        if prefix is None:
            if len(self._enqueue_prefixes) >= _MAX_KEY_CACHE:
                self._enqueue_prefixes.clear()
            keys = self.queue_keys(queue).for_enqueue()
            prefix = self._enqueue_prefixes[queue] = self._enqueue.prefix(keys, queue)
        return prefix

    def _publish(self, send: Callable[[], object], retry: PublishRetry | None) -> None:
        try:
            publish_with_retry(send, retry or self.settings.publish_retry, retry_on=CONNECTION_ERRORS,
                               target=f"redis broker {self._masked_url}")
        except RedisError as exc:
            detail = mask_secrets(str(exc))
            raise BrokerError(f"redis broker {self._masked_url} refused a publish: {detail}") from exc

    # -- consuming ----------------------------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Lease up to ``max_messages`` messages; blocks up to ``timeout_s`` seconds (Redis ends a blocking wait on
        its timer tick, so an empty fetch may return up to 100 ms late at the server's default ``hz 10``). An
        enqueue wakes it at once; due delayed messages and expired leases within ``MAX_BLOCK_S``. See
        ``Broker.fetch``.

        A fetch that came back short emptied every one of its queues and deleted their wake-up lists in the same
        script, so from then on every message made ready pushes a token: the next fetch of the same queues starts
        with the blocking wait (which returns at once when a token is there) and saves a round trip."""
        names = fair_order(queues, self._rotation)
        if not names or max_messages < 1:
            return []
        self._rotation += 1
        command, signals = self._fetch_command(max_messages, names)
        queue_set = frozenset(names)
        now = time.monotonic()
        deadline = now + max(0.0, timeout_s)
        with self._translate("fetch"):
            reply = self._after_short_fetch(queue_set, now, deadline)
            if reply is None:
                reply = self._call(command)[0]
            while True:
                if len(reply) > 1:
                    deliveries = _deliveries(names, reply)
                    if len(deliveries) < max_messages:
                        self._short_fetches[queue_set] = (time.monotonic(), reply[0])
                    return deliveries
                block_s = min(deadline - time.monotonic(), self._max_block_s)
                if reply[0] >= 0:
                    block_s = min(block_s, reply[0] / 1000)
                if block_s >= 0.001:
                    # Wait for a wake-up token and fetch in the same write: the server runs the fetch the moment
                    # the BLPOP returns (woken or timed out), so the messages come back with the wake-up.
                    woken, reply = self._hot.call(pack("BLPOP", *signals, f"{block_s:.3f}") + command, 2)
                    if isinstance(woken, ResponseError):
                        raise woken
                    if isinstance(reply, NoScriptError):
                        reply = self._call(command)[0]
                    elif isinstance(reply, ResponseError):
                        raise reply
                elif time.monotonic() >= deadline:
                    self._short_fetches[queue_set] = (time.monotonic(), reply[0])
                    return []
                else:
                    reply = self._call(command)[0]

    def _after_short_fetch(self, queue_set: frozenset[str], now: float, deadline: float) -> list[Any] | None:
        """When the last fetch of these queues came back short and this one may block, a stand-in for the first
        fetch's empty reply (its ``ms until the next delayed message``, counted down), else None."""
        short = self._short_fetches.pop(queue_set, None)
        if short is None or deadline - now < 0.001:
            return None
        if len(self._short_fetches) >= _MAX_FETCH_CACHE:
            self._short_fetches.clear()
        at, due_ms = short
        if due_ms < 0:
            return [-1]
        left_ms = due_ms - (now - at) * 1000
        return [left_ms] if left_ms >= 1 else None

    def _fetch_command(self, max_messages: int, names: list[str]) -> tuple[bytes, list[str]]:
        """The packed fetch script call for ``max_messages`` from ``names`` (in this order), and the queues' wake-up
        lists."""
        cache_key = (max_messages, *names)
        cached = self._fetch_commands.get(cache_key)
        if cached is None:
            per_queue = [self.queue_keys(name) for name in names]
            keys = [key for queue_keys in per_queue for key in queue_keys.all()]
            signals = [queue_keys.signal for queue_keys in per_queue]
            command = self._fetch.prefix(keys, max_messages, self._vt_ms, self.settings.max_deliveries,
                                         *names).plus(())
            if len(self._fetch_commands) >= _MAX_FETCH_CACHE:
                self._fetch_commands.clear()
            cached = self._fetch_commands[cache_key] = (command, signals)
        return cached

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete these messages (one round trip). See ``Broker.ack``."""
        self._settle_leases("ack", deliveries)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again at their old rank, delivery not counted. See ``Broker.release``."""
        self._settle_leases("release", deliveries)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again at their old rank, delivery counted. See ``Broker.nack``."""
        self._settle_leases("nack", deliveries)

    def extend(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Renew leases to the server's now + ``visibility_timeout_s``; returns those still held (one round trip).
        See ``Broker.extend``."""
        replies = self._settle_leases("extend", deliveries)
        renewed: set[tuple[str, str, int]] = set()
        for queue, reply in zip(dict.fromkeys(d.queue for d in deliveries), replies, strict=True):
            renewed.update((queue, reply[i].decode(), int(reply[i + 1])) for i in range(0, len(reply), 2))
        return [d for d in deliveries if (d.queue, d.message_id, d.delivery_count) in renewed]

    def _settle_leases(self, mode: str, deliveries: Sequence[Delivery]) -> list[Any]:
        """One script call per queue (all of them in one round trip), in the order the queues first appear in
        ``deliveries``; returns the scripts' replies in that order."""
        by_queue: dict[str, list[Any]] = {}
        for delivery in deliveries:
            by_queue.setdefault(delivery.queue, []).extend((delivery.message_id, delivery.delivery_count))
        commands: list[bytes] = []
        for queue, leases in by_queue.items():
            prefix = self._settle.prefix(self.queue_keys(queue).for_settle(), mode, self._vt_ms)
            commands.append(prefix.plus(leases))
        if not commands:
            return []
        with self._translate(mode):
            return self._call(b"".join(commands), len(commands))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the in-flight message to its queue's dead-letter list with ``reason``; no-op if the lease was
        lost. See ``Broker.dead_letter``."""
        with self._translate("dead_letter"):
            self._dead_letter(
                keys=self.queue_keys(delivery.queue).for_dead_letter(),
                args=[
                    delivery.message_id, delivery.delivery_count, reason, delivery.queue,
                    base64.b64encode(delivery.data),
                ],
            )

    # -- inspection and administration -------------------------------------------------------------------------

    def queue_depth(self, queue: str) -> QueueDepth:
        """Counts in one round trip (``lua/depth.lua``, read-only). ``in_flight`` includes expired leases not yet
        reclaimed by a fetch; ``due`` counts the delayed messages already due by the server's clock, which stay in
        the delayed set until a fetch moves them to ready."""
        with self._translate("queue_depth"):
            n_ready, n_inflight, n_delayed, n_due, n_dead = self._depth(keys=self.queue_keys(queue).for_depth())
        return QueueDepth(ready=n_ready, in_flight=n_inflight, delayed=n_delayed, due=n_due, dead=n_dead)

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue`` (not removed)."""
        if limit < 1:
            return []
        dead = self.queue_keys(queue).dead
        with self._translate("dead_letters"):
            raw = self._client.lrange(dead, 0, limit - 1)
        return [_parse_dead_letter(queue, record) for record in raw]

    def requeue_dead_letters(self, queue: str, *, message_ids: Sequence[str] | None = None) -> int:
        """Ready again at priority 0 (dead-letter records do not keep it), oldest first at the tail, delivery count
        reset; an id still stored (enqueued again since) is replaced, as by ``enqueue``. Reads the list a page at a
        time and moves each page's selection in atomic script calls of up to ``REQUEUE_CHUNK_BYTES``: every message
        leaves the list in the same step that makes it ready, so a crash midway leaves the rest dead-lettered.
        Dead letters added while it runs are left for the next call. See ``Broker.requeue_dead_letters``."""
        wanted = None if message_ids is None else set(message_ids)
        queue_keys = self.queue_keys(queue)
        keys, dead = queue_keys.for_requeue_dead(), queue_keys.dead
        moved = offset = 0
        with self._translate("requeue_dead_letters"):
            unread = int(self._client.llen(dead))
            while unread > 0:
                page = self._client.lrange(dead, offset, offset + min(REQUEUE_PAGE, unread) - 1)
                if not page:
                    break
                unread -= len(page)
                letters = [(raw, _parse_dead_letter(queue, raw)) for raw in page]
                chosen = [(raw, letter) for raw, letter in letters if wanted is None or letter.message_id in wanted]
                got = self._move_dead(keys, queue, chosen) if chosen else 0
                moved += got
                offset += len(page) - got  # what was moved no longer sits before the next page
        return moved

    def _move_dead(self, keys: list[str], queue: str, chosen: Sequence[tuple[bytes | str, DeadLetter]]) -> int:
        """Move ``chosen`` (each dead letter with its record as stored), oldest first, in script calls of up to
        ``REQUEUE_CHUNK_BYTES``. Returns how many were still in the list and moved."""
        moved = size = 0
        args: list[Any] = [queue]
        for raw, letter in chosen:
            args += [raw, letter.message_id, letter.data]
            size += len(letter.data)
            if size >= REQUEUE_CHUNK_BYTES:
                moved += int(self._requeue_dead(keys=keys, args=args))
                args, size = [queue], 0
        if len(args) > 1:
            moved += int(self._requeue_dead(keys=keys, args=args))
        return moved

    def purge(self, queue: str) -> int:
        """Delete ready and delayed messages of ``queue``; returns how many."""
        with self._translate("purge"):
            return int(self._purge(keys=self.queue_keys(queue).for_purge()))

    def queues(self) -> list[str]:
        """Names of every queue a message was ever enqueued to on this server, sorted."""
        with self._translate("queues"):
            members = self._client.smembers(QUEUES_KEY)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def ping(self) -> None:
        """PING the server; raises ``BrokerConnectionError`` when it does not answer."""
        with self._translate("ping"):
            self._client.ping()

    def close(self) -> None:
        """Close every pooled connection."""
        self._hot.close()
        self._client.close()

    # -- helpers ------------------------------------------------------------------------------------------------

    def queue_keys(self, queue: str) -> QueueKeys:
        """``QueueKeys.of(queue)``, cached (up to ``_MAX_KEY_CACHE`` queues)."""
        keys = self._keys.get(queue)
        if keys is None:
            if len(self._keys) >= _MAX_KEY_CACHE:
                self._keys.clear()
            keys = self._keys[queue] = QueueKeys.of(queue)
        return keys

    def _call(self, payload: bytes, replies: int = 1) -> list[Any]:
        """Send ``payload`` (calls of the hot scripts, each safe to run twice) and return its replies."""
        return self._hot.call_scripts((self._enqueue, self._fetch, self._settle), payload, replies)

    def _translate(self, action: str) -> AbstractContextManager[None]:
        return translate_errors(f"redis broker {self._masked_url}", action, BrokerError)


def _packed_message(message_id: str, data: bytes, priority: int, delay_s: float) -> bytes:
    """The enqueue script's arguments for one message (id, data, priority, delay in ms), packed in one go: the
    batch path packs thousands of them."""
    mid = message_id.encode()
    delay_ms = b"%d" % max(0, round(delay_s * 1000))
    return b"$%d\r\n%b\r\n$%d\r\n%b\r\n$1\r\n%d\r\n$%d\r\n%b\r\n" % (
        len(mid), mid, len(data), data, check_priority(priority), len(delay_ms), delay_ms)


def _deliveries(names: Sequence[str], reply: Sequence[Any]) -> list[Delivery]:
    return [
        Delivery(
            queue=names[int(reply[i])],
            message_id=reply[i + 1].decode(),
            data=bytes(reply[i + 2]),
            delivery_count=int(reply[i + 3]),
        )
        for i in range(1, len(reply), 4)
    ]


def _parse_dead_letter(queue: str, raw: bytes | str) -> DeadLetter:
    try:
        record = orjson.loads(raw)
        return DeadLetter(
            queue=str(record.get("queue") or queue),
            message_id=str(record["id"]),
            reason=str(record["reason"]),
            data=base64.b64decode(record["data_b64"], validate=True),
            dead_at=float(record["dead_at"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise BrokerError(f"malformed dead-letter record in queue {queue!r}: {exc}") from exc
