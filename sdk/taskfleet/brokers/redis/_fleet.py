"""The fleet store on Redis: records as keys with TTLs, revocations in a sorted set and a hash, control over pub/sub,
replies in short-lived lists, events in a capped stream. Key names: ``_keys.FleetKeys``; scripts: ``lua/fleet_*``.

- **Registry.** ``heartbeat`` sets the worker's key with ``PX`` and scores it in an index (a sorted set, expiry by
  the server clock), so ``workers()`` lists without ``KEYS``/``SCAN``: it prunes the index, then reads the keys.
- **Revocations.** A sorted set (task id -> expiry) and a hash (task id -> JSON), pruned on every call, both
  expiring with the last revocation.
- **Control.** ``PUBLISH`` on the namespace's channel; each listener has a pub/sub connection of its own, and is
  subscribed (confirmed by the server) before ``control_listener`` returns.
- **Replies.** An inbox is a list plus an "open" key; ``reply`` pushes only while that key exists and gives the list
  a TTL (``REPLY_TTL_S``), so replies to a closed or abandoned inbox go away by themselves. ``collect`` pops
  (``BLPOP``).
- **Events.** A stream with one entry per ``emit_events`` batch (``event_entries``: the events newline-joined in
  field ``e``, their count in ``n``; at most 1000 events or about 64 KiB an entry), written by one script call
  (``lua/fleet_emit.lua``) on the broker's hot-path connections: the server's work per stream entry, not per event,
  was most of what task events cost. The cap counts events: a counter key holds how many the stream has, and once it
  passes ``events_max_len`` by a tenth the script drops whole entries from the head while at least
  ``events_max_len`` are left. So the stream holds between ``events_max_len`` and about 1.1 times that plus one
  entry's events. The cursor is the id of the last entry read, ``"<id>:<n>"`` when a page ended after its first
  ``n`` events.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Self

import redis

from taskfleet._connections.redis import EvalSha, HotConnections, connect_redis, translate_errors
from taskfleet.brokers import event_entries
from taskfleet.brokers.base import Broker
from taskfleet.brokers.event_entries import Cursor
from taskfleet.brokers.fleet_store import ControlListener, FleetStore, ReplyInbox
from taskfleet.brokers.redis._keys import FleetKeys
from taskfleet.brokers.redis._scripts import load_script, script_source
from taskfleet.errors import BrokerError, ControlError, DecodeError
from taskfleet.fleet.revocations import Revocation
from taskfleet.settings import BrokerSettings
from taskfleet.urls import mask_url

HEALTH_CHECK_INTERVAL_S = 30
#: How long replies wait in an inbox's list for their client (seconds); also how long an inbox whose client
#: vanished stays open past its last ``collect``.
REPLY_TTL_S = 600.0
#: Longest single blocking command (BLPOP, XREAD BLOCK, a pub/sub wait): must stay under the socket timeout.
MAX_BLOCK_S = 1.0
#: Replies taken per ``LPOP`` while collecting.
_POP_COUNT = 1000
_EVENT_FIELD = b"e"
_START = "0-0"
_STREAM_ID = re.compile(r"\d+(-\d+)?")


def _events_of(fields: dict[bytes, bytes]) -> list[bytes]:
    return event_entries.unpack(fields.get(_EVENT_FIELD, b""))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Errors:
    def __init__(self, masked_url: str) -> None:
        self.masked_url = masked_url

    def __call__(self, action: str) -> AbstractContextManager[None]:
        return translate_errors(f"redis fleet store {self.masked_url}", action, BrokerError)


class _RedisListener(ControlListener):
    def __init__(self, client: redis.Redis, channel: str, errors: _Errors, block_s: float) -> None:
        self._errors = errors
        self._block_s = block_s
        # Typed from redis-py 8.2 on, untyped before: the ignore holds for both.
        self._pubsub = client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
        with errors("subscribe to control requests"):
            self._pubsub.subscribe(channel)
            deadline = time.monotonic() + max(block_s * 2, 1.0)
            # Wait for the server's confirmation: a request published after this returns is certain to arrive.
            while True:
                message = self._pubsub.get_message(timeout=block_s)
                if message is not None and message["type"] == "subscribe":
                    break
                if time.monotonic() > deadline:
                    self._pubsub.close()
                    raise BrokerError(f"redis fleet store {errors.masked_url}: no confirmation of the subscription")

    def receive(self, timeout_s: float) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._errors("receive control requests"):
            while True:
                wait = 0.0 if got else min(self._block_s, max(0.0, deadline - time.monotonic()))
                message = self._pubsub.get_message(timeout=wait)
                if message is not None:
                    if message["type"] == "message":
                        got.append(bytes(message["data"]))
                    continue
                if got or time.monotonic() >= deadline:
                    return got

    def close(self) -> None:
        with self._errors("unsubscribe"):
            self._pubsub.close()


class _RedisInbox(ReplyInbox):
    def __init__(self, client: redis.Redis, keys: FleetKeys, errors: _Errors, block_s: float) -> None:
        self.address = uuid.uuid4().hex
        self._client = client
        self._list = keys.inbox(self.address)
        self._open = keys.inbox_open(self.address)
        self._errors = errors
        self._block_s = block_s
        with errors("open a reply inbox"):
            client.set(self._open, b"1", px=int(REPLY_TTL_S * 1000))

    def collect(self, timeout_s: float, *, expected: int | None = None) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._errors("collect replies"):
            if not self._client.pexpire(self._open, int((max(0.0, timeout_s) + REPLY_TTL_S) * 1000)):
                raise ControlError("collect on a closed or expired reply inbox")
            while True:
                popped_now: Any = self._client.lpop(self._list, _POP_COUNT)
                got += popped_now or []
                remaining = deadline - time.monotonic()
                if (expected is not None and len(got) >= expected) or remaining <= 0:
                    return got
                popped: Any = self._client.blpop([self._list], timeout=min(self._block_s, remaining))
                if popped is not None:
                    got.append(popped[1])

    def close(self) -> None:
        with self._errors("close a reply inbox"):
            self._client.delete(self._open, self._list)


class RedisFleetStore(FleetStore):
    """A ``FleetStore`` on the Redis server of ``settings.url`` (its own connections; module docstring)."""

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, events_max_len: int) -> Self:
        """A store with its own connections to ``broker``'s server (``FleetStore.for_broker``)."""
        return cls(broker.settings, namespace=namespace, events_max_len=events_max_len)

    def __init__(self, settings: BrokerSettings, *, namespace: str, events_max_len: int) -> None:
        self.namespace = namespace
        self.events_max_len = events_max_len
        self._errors = _Errors(mask_url(settings.url))
        self._block_s = min(MAX_BLOCK_S, settings.socket_timeout_s / 2)
        self._client: redis.Redis = connect_redis(settings.url, socket_timeout_s=settings.socket_timeout_s,
                                                  health_check_interval_s=HEALTH_CHECK_INTERVAL_S, error=BrokerError)
        self._hot = HotConnections(self._client)
        self.keys = FleetKeys.of(namespace)
        self._heartbeat = load_script(self._client, "fleet_heartbeat")
        self._workers = load_script(self._client, "fleet_workers")
        self._revocations = load_script(self._client, "fleet_revocations")
        self._reply = load_script(self._client, "fleet_reply")
        self._emit_script = EvalSha(script_source("fleet_emit"))
        self._emit = self._emit_script.prefix([self.keys.events, self.keys.events_count], events_max_len)

    # -- registry --------------------------------------------------------------------------------------------------

    def heartbeat(self, worker_id: str, record: bytes, *, ttl_s: float) -> None:
        with self._errors("store a heartbeat"):
            self._heartbeat(keys=[self.keys.worker(worker_id), self.keys.workers],
                            args=[worker_id, record, max(1, int(ttl_s * 1000))])

    def forget_worker(self, worker_id: str) -> None:
        with self._errors("forget a worker"):
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            pipe.execute()

    def workers(self) -> list[bytes]:
        with self._errors("list workers"):
            ids = self._workers(keys=[self.keys.workers])
            if not ids:
                return []
            records: list[Any] = self._client.mget([self.keys.worker(_text(i)) for i in ids])
        return [bytes(record) for record in records if record is not None]

    # -- revocations -----------------------------------------------------------------------------------------------

    def add_revocations(self, revocations: Sequence[Revocation]) -> None:
        if not revocations:
            return
        args: list[str | bytes | int] = []
        for revocation in revocations:
            args += [revocation.task_id, int(revocation.expires_at * 1000), revocation.to_json()]
        with self._errors("store revocations"):
            self._revocations(keys=[self.keys.revoked, self.keys.revocations], args=args)

    def revocations(self) -> list[Revocation]:
        with self._errors("list revocations"):
            raw = self._revocations(keys=[self.keys.revoked, self.keys.revocations], args=[])
        out = []
        for data in raw or []:
            try:
                out.append(Revocation.from_json(data))
            except DecodeError:
                continue  # written by something else: not ours to honour
        return out

    # -- control ---------------------------------------------------------------------------------------------------

    def publish_control(self, request: bytes) -> None:
        with self._errors("publish a control request"):
            self._client.publish(self.keys.control, request)

    def control_listener(self, worker_id: str) -> ControlListener:
        return _RedisListener(self._client, self.keys.control, self._errors, self._block_s)

    def reply_inbox(self) -> ReplyInbox:
        return _RedisInbox(self._client, self.keys, self._errors, self._block_s)

    def reply(self, address: str, reply: bytes) -> None:
        with self._errors("send a reply"):
            self._reply(keys=[self.keys.inbox(address), self.keys.inbox_open(address)],
                        args=[reply, int(REPLY_TTL_S * 1000)])

    # -- events ----------------------------------------------------------------------------------------------------

    def emit_events(self, events: Sequence[bytes]) -> None:
        """One ``EVALSHA`` of ``lua/fleet_emit.lua`` for the whole batch, stored as one stream entry (more for a
        large batch; module docstring: the cap is approximate)."""
        if not events:
            return
        args: list[bytes | int] = []
        for entry in event_entries.pack(events):
            args += [entry.count, entry.payload]
        with self._errors("emit events"):
            self._hot.call_scripts((self._emit_script,), self._emit.plus(args))

    def read_events(self, cursor: str | None, *, limit: int = 1000, timeout_s: float = 0.0) -> tuple[list[bytes], str]:
        at = Cursor.parse(cursor, _STREAM_ID) if cursor is not None else Cursor(_START)
        if limit <= 0:
            return [], str(at)
        deadline = time.monotonic() + max(0.0, timeout_s)
        pending: list[tuple[str, list[bytes], int]] = []
        with self._errors("read events"):
            if at.read is not None:  # a page ended inside this entry: the rest of it first, if it is still kept
                partly: Any = self._client.xrange(self.keys.events, at.entry, at.entry)
                if partly:
                    pending.append((at.entry, _events_of(partly[0][1]), at.read))
            while True:
                remaining = deadline - time.monotonic()
                block = None if remaining <= 0 or pending else max(1, int(min(self._block_s, remaining) * 1000))
                found: Any = self._client.xread({self.keys.events: at.entry}, count=max(1, limit), block=block)
                entries = found[0][1] if found else []
                if entries or pending or remaining <= 0:
                    break
        pending += [(_text(entry), _events_of(fields), 0) for entry, fields in entries]
        events, after = event_entries.take(pending, limit)
        return events, str(after or at)

    def events_end(self) -> str:
        with self._errors("find the end of the events"):
            last: Any = self._client.xrevrange(self.keys.events, count=1)
        return _text(last[0][0]) if last else _START

    def close(self) -> None:
        self._hot.close()
        self._client.close()
