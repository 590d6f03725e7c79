"""The Redis broker: every state change is one Lua script, so a message is never in two states at once.

Per queue ``Q`` the keys share the ``{Q}`` hash tag (layout in ``redis_common.lua``). Ready messages sit in a sorted
set ranked by ``(9 - priority) * 2**40 + seq``, so ``ZPOPMIN`` gives priority order and FIFO within a priority; leases
and delayed messages are sorted sets scored by the server clock in milliseconds. ``fetch`` promotes due messages,
reclaims expired leases and pops in one script; when nothing is ready it blocks on ``BLPOP`` of the queues' wake-up
lists (pushed by every enqueue), so an idle consumer wakes as soon as a message arrives. Needs Redis >= 6.0.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from importlib import resources
from typing import Any

import orjson
import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisError

from taskfleet.brokers.base import (
    Broker,
    DeadLetter,
    Delivery,
    Outgoing,
    QueueDepth,
    check_priority,
    publish_with_retry,
)
from taskfleet.errors import BrokerError
from taskfleet.redis_connection import CONNECTION_ERRORS, connect_redis, translate_errors
from taskfleet.settings import BrokerSettings, validate_queue_name
from taskfleet.urls import mask_secrets, mask_url

PREFIX = "tf:"
QUEUES_KEY = PREFIX + "queues"
#: Longest single BLPOP while idle: bounds how late a delayed message or an expired lease is noticed.
MAX_BLOCK_S = 1.0
#: Idle pooled connections are PINGed before reuse after this long, so a restarted server is noticed early.
HEALTH_CHECK_INTERVAL_S = 30
_KEY_SUFFIXES = ("ready", "inflight", "delayed", "msg", "rank", "dlv", "seq", "signal", "dead")
_MAX_KEY_CACHE = 256
#: Messages per script call in ``enqueue_many``: bounds how long one call holds the server (about 2 ms).
ENQUEUE_CHUNK = 250
#: Dead-letter records read per LRANGE by ``requeue_dead_letters``.
REQUEUE_PAGE = 100
#: Message bytes moved per script call by ``requeue_dead_letters`` (at least one message): bounds how long one call
#: holds the server.
REQUEUE_CHUNK_BYTES = 4 * 2**20


def queue_keys(queue: str) -> tuple[str, ...]:
    validate_queue_name(queue)  # also guarantees no '{' or '}' that would break the hash tag
    return tuple(f"{PREFIX}{{{queue}}}:{suffix}" for suffix in _KEY_SUFFIXES)


def load_script(client: redis.Redis, name: str) -> Script:
    package = resources.files("taskfleet.brokers")
    common = package.joinpath("redis_common.lua").read_text(encoding="utf-8")
    body = package.joinpath(f"redis_{name}.lua").read_text(encoding="utf-8")
    return client.register_script(common + "\n" + body)


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
        self._enqueue = load_script(self._client, "enqueue")
        self._fetch = load_script(self._client, "fetch")
        self._settle = load_script(self._client, "settle")
        self._dead_letter = load_script(self._client, "dead_letter")
        self._purge = load_script(self._client, "purge")
        self._requeue_dead = load_script(self._client, "requeue_dead")
        self._keys: dict[str, tuple[str, ...]] = {}
        self._rotation = 0

    # -- publishing ---------------------------------------------------------------------------------------------

    def enqueue(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0) -> None:
        """Store ``data`` in ``queue`` (one round trip). See ``Broker.enqueue``."""
        keys = self._enqueue_keys(queue)
        args: list[Any] = [queue, *_message_args(message_id, data, priority, delay_s)]
        self._publish(lambda: self._enqueue(keys=keys, args=args))

    def enqueue_many(self, items: Sequence[Outgoing]) -> None:
        """Enqueue a batch in one pipelined round trip: one script call per queue and ``ENQUEUE_CHUNK`` messages
        (not atomic as a whole; each message is stored on its own)."""
        by_queue: dict[str, list[Any]] = {}
        for item in items:
            by_queue.setdefault(item.queue, []).append(
                _message_args(item.message_id, item.data, item.priority, item.delay_s)
            )
        calls: list[tuple[Sequence[str], Sequence[Any]]] = []
        for queue, messages in by_queue.items():
            keys = self._enqueue_keys(queue)
            for start in range(0, len(messages), ENQUEUE_CHUNK):
                chunk = messages[start:start + ENQUEUE_CHUNK]
                calls.append((keys, [queue, *(arg for message in chunk for arg in message)]))
        if calls:
            self._publish(lambda: self._run_pipelined(self._enqueue, calls))

    def _enqueue_keys(self, queue: str) -> list[str]:
        return [*self.queue_keys(queue)[:8], QUEUES_KEY]

    def _publish(self, send: Callable[[], object]) -> None:
        try:
            publish_with_retry(send, self.settings.publish_retry, retry_on=CONNECTION_ERRORS,
                               target=f"redis broker {self._masked_url}")
        except RedisError as exc:
            detail = mask_secrets(str(exc))
            raise BrokerError(f"redis broker {self._masked_url} refused a publish: {detail}") from exc

    # -- consuming ----------------------------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Lease up to ``max_messages`` messages; blocks up to ``timeout_s`` seconds (Redis ends a blocking wait on
        its timer tick, so an empty fetch may return up to 100 ms late at the server's default ``hz 10``). An
        enqueue wakes it at once; due delayed messages and expired leases within ``MAX_BLOCK_S``. See
        ``Broker.fetch``."""
        names = list(dict.fromkeys(queues))
        if not names or max_messages < 1:
            return []
        start = self._rotation % len(names)
        self._rotation += 1
        names = names[start:] + names[:start]
        keys = [key for name in names for key in self.queue_keys(name)]
        signals = [keys[i * len(_KEY_SUFFIXES) + 7] for i in range(len(names))]
        args: list[Any] = [max_messages, self._vt_ms, self.settings.max_deliveries, *names]
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._translate("fetch"):
            while True:
                reply = self._fetch(keys=keys, args=args)
                if len(reply) > 1:
                    return _deliveries(names, reply)
                block_s = min(deadline - time.monotonic(), self._max_block_s)
                if reply[0] >= 0:
                    block_s = min(block_s, reply[0] / 1000)
                if block_s >= 0.001:
                    self._client.blpop(signals, timeout=block_s)
                elif time.monotonic() >= deadline:
                    return []

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete these messages (one round trip). See ``Broker.ack``."""
        self._settle_leases("ack", deliveries)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again at their old rank, delivery not counted. See ``Broker.release``."""
        self._settle_leases("release", deliveries)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again at their old rank, delivery counted. See ``Broker.nack``."""
        self._settle_leases("nack", deliveries)

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew leases to the server's now + ``visibility_timeout_s``. See ``Broker.extend``."""
        self._settle_leases("extend", deliveries)

    def _settle_leases(self, mode: str, deliveries: Sequence[Delivery]) -> None:
        by_queue: dict[str, list[Any]] = {}
        for delivery in deliveries:
            by_queue.setdefault(delivery.queue, []).extend((delivery.message_id, delivery.delivery_count))
        calls: list[tuple[list[str], list[Any]]] = []
        for queue, leases in by_queue.items():
            ready, inflight, _, msg, rank, dlv, _, signal, _ = self.queue_keys(queue)
            calls.append(([ready, inflight, msg, rank, dlv, signal], [mode, self._vt_ms, *leases]))
        with self._translate(mode):
            if len(calls) == 1:
                self._settle(keys=calls[0][0], args=calls[0][1])
            elif calls:
                self._run_pipelined(self._settle, calls)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the in-flight message to its queue's dead-letter list with ``reason``; no-op if the lease was
        lost. See ``Broker.dead_letter``."""
        _, inflight, _, msg, rank, dlv, _, _, dead = self.queue_keys(delivery.queue)
        with self._translate("dead_letter"):
            self._dead_letter(
                keys=[inflight, msg, rank, dlv, dead],
                args=[
                    delivery.message_id, delivery.delivery_count, reason, delivery.queue,
                    base64.b64encode(delivery.data),
                ],
            )

    # -- inspection and administration -------------------------------------------------------------------------

    def queue_depth(self, queue: str) -> QueueDepth:
        """Counts in one round trip. ``in_flight`` includes expired leases not yet reclaimed by a fetch."""
        ready, inflight, delayed, *_, dead = self.queue_keys(queue)
        with self._translate("queue_depth"):
            pipe = self._client.pipeline(transaction=False)
            pipe.zcard(ready)
            pipe.zcard(inflight)
            pipe.zcard(delayed)
            pipe.llen(dead)
            n_ready, n_inflight, n_delayed, n_dead = pipe.execute()
        return QueueDepth(ready=n_ready, in_flight=n_inflight, delayed=n_delayed, dead=n_dead)

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue`` (not removed)."""
        if limit < 1:
            return []
        dead = self.queue_keys(queue)[8]
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
        keys = [*self.queue_keys(queue), QUEUES_KEY]
        dead = keys[8]
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
        ready, inflight, delayed, msg, rank, dlv, _, signal, _ = self.queue_keys(queue)
        with self._translate("purge"):
            return int(self._purge(keys=[ready, inflight, delayed, msg, rank, dlv, signal]))

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
        self._client.close()

    # -- helpers ------------------------------------------------------------------------------------------------

    def queue_keys(self, queue: str) -> tuple[str, ...]:
        keys = self._keys.get(queue)
        if keys is None:
            if len(self._keys) >= _MAX_KEY_CACHE:
                self._keys.clear()
            keys = self._keys[queue] = queue_keys(queue)
        return keys

    def _run_pipelined(self, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run ``script`` once per call in one non-transactional round trip. Scripts are written to be safe to run
        twice, so after a server restart (NOSCRIPT) the batch is loaded and sent again."""
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if not errors:
                return results
            if attempt == 1 and any(isinstance(e, NoScriptError) for e in errors):
                script.sha = self._client.script_load(script.script)
                continue
            raise errors[0]
        raise AssertionError("unreachable")

    def _translate(self, action: str) -> AbstractContextManager[None]:
        return translate_errors(f"redis broker {self._masked_url}", action, BrokerError)


def _message_args(message_id: str, data: bytes, priority: int, delay_s: float) -> tuple[str, bytes, int, int]:
    return message_id, data, check_priority(priority), max(0, round(delay_s * 1000))


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
