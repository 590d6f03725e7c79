"""The beat store on Redis: a leader key with a TTL, a hash of cursors, and one short-lived key per claimed tick.

Keys (namespace ``N``): ``tf:beat:{N}:leader`` (the holder's name, ``SET NX PX`` and renewed by compare-and-set),
``tf:beat:{N}:cursors`` (hash: entry -> Unix ms of its last sent or skipped tick) and
``tf:beat:{N}:tick:<entry>:<ms>`` (the tick's idempotency key, kept ``claim_ttl_s``).

A fire is one optimistic transaction: ``WATCH`` the leader key, the tick key and the cursors, check that this
replica leads, the tick is unclaimed and after the cursor, then ``MULTI`` / the broker's own enqueue script / claim /
cursor / ``EXEC``. Redis applies all of it or, when any watched key changed (another leader, a claim), none of it.
So a tick is sent at most once even by two replicas that both believe they lead, and never lost between claim and
enqueue.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Self

import redis
from redis.exceptions import WatchError

from taskfleet._connections.redis import connect_redis, translate_errors
from taskfleet.brokers.base import Broker
from taskfleet.brokers.beat_store import BeatStore, Tick
from taskfleet.brokers.redis._keys import QueueKeys
from taskfleet.brokers.redis._scripts import load_script
from taskfleet.errors import CoordinationError
from taskfleet.settings import BrokerSettings
from taskfleet.urls import mask_url

PREFIX = "tf:beat:"
HEALTH_CHECK_INTERVAL_S = 30
#: A watched transaction that lost a race is tried this many times before ``fire`` reports "not sent".
_FIRE_ATTEMPTS = 3

# Take the lease when free, renew it when ours; 1 when this holder leads afterwards.
_HOLD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Move a cursor forward (never back), only while this holder leads.
_SKIP = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[2]))
if current == nil or current < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
return 1
"""


class RedisBeatStore(BeatStore):
    """A ``BeatStore`` on the Redis server of ``settings.url`` (its own connection pool)."""

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, holder: str, lease_s: float, claim_ttl_s: float) -> Self:
        """A store with its own connection to ``broker``'s server (``BeatStore.for_broker``)."""
        return cls(broker.settings, namespace=namespace, holder=holder, lease_s=lease_s, claim_ttl_s=claim_ttl_s)

    def __init__(self, settings: BrokerSettings, *, namespace: str, holder: str, lease_s: float,
                 claim_ttl_s: float) -> None:
        self.holder = holder
        self.lease_s = lease_s
        self._lease_ms = int(lease_s * 1000)
        self._claim_ttl_ms = int(claim_ttl_s * 1000)
        self._masked_url = mask_url(settings.url)
        self._client: redis.Redis = connect_redis(settings.url, socket_timeout_s=settings.socket_timeout_s,
                                                  health_check_interval_s=HEALTH_CHECK_INTERVAL_S,
                                                  error=CoordinationError)
        base = f"{PREFIX}{{{namespace}}}:"
        self._leader, self._cursors, self._tick_prefix = base + "leader", base + "cursors", base + "tick:"
        self._hold = self._client.register_script(_HOLD)
        self._release = self._client.register_script(_RELEASE)
        self._skip = self._client.register_script(_SKIP)
        # Sent as full text inside MULTI: an EVALSHA that met NOSCRIPT there would fail alone while the claim and
        # cursor in the same transaction were applied.
        self._enqueue_text = str(load_script(self._client, "enqueue").script)

    def hold_lease(self) -> bool:
        with self._translate("hold the lease"):
            return bool(self._hold(keys=[self._leader], args=[self.holder, self._lease_ms]))

    def release_lease(self) -> None:
        with self._translate("release the lease"):
            self._release(keys=[self._leader], args=[self.holder])

    def cursors(self, entries: Sequence[str]) -> dict[str, int | None]:
        if not entries:
            return {}
        with self._translate("read cursors"):
            values = self._client.hmget(self._cursors, list(entries))
        return {entry: None if value is None else int(value) for entry, value in zip(entries, values, strict=True)}

    def start_cursor(self, entry: str, at_ms: int) -> int:
        with self._translate("start a cursor"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hsetnx(self._cursors, entry, at_ms)
            pipe.hget(self._cursors, entry)
            _, stored = pipe.execute()
        return int(stored)

    def fire(self, tick: Tick) -> bool:
        tick_key = f"{self._tick_prefix}{tick.entry}:{tick.scheduled_ms}"
        m = tick.message
        enqueue_keys = QueueKeys.of(m.queue).for_enqueue()
        enqueue_args: list[str | bytes | int] = [m.queue, m.message_id, m.data, m.priority,
                                                 max(0, round(m.delay_s * 1000))]
        with self._translate("fire a tick"):
            for _ in range(_FIRE_ATTEMPTS):
                with self._client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(self._leader, tick_key, self._cursors)  # type: ignore[no-untyped-call]
                        leader = pipe.get(self._leader)
                        cursor = pipe.hget(self._cursors, tick.entry)
                        if (leader is None or _text(leader) != self.holder or pipe.exists(tick_key)
                                or (cursor is not None and int(cursor) >= tick.scheduled_ms)):
                            return False
                        pipe.multi()
                        pipe.eval(self._enqueue_text, len(enqueue_keys), *enqueue_keys, *enqueue_args)
                        pipe.set(tick_key, self.holder, px=self._claim_ttl_ms)
                        pipe.hset(self._cursors, tick.entry, tick.scheduled_ms)
                        pipe.execute()
                        return True
                    except WatchError:
                        continue
        return False

    def skip(self, entry: str, scheduled_ms: int) -> None:
        with self._translate("skip a tick"):
            self._skip(keys=[self._cursors, self._leader], args=[self.holder, entry, scheduled_ms])

    def close(self) -> None:
        self._client.close()

    def _translate(self, action: str) -> AbstractContextManager[None]:
        return translate_errors(f"redis beat store {self._masked_url}", action, CoordinationError)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
