"""``RedisWakeFeed``: the queues' wake channels (``tf:{Q}:wake``), on which ``lua/enqueue.lua`` publishes a queue's
name when it makes the queue's empty ready set non-empty. One pub/sub connection per feed, subscribed to exactly the
followed queues' channels (SUBSCRIBE, not a pattern: a pattern would cost the server a match on every PUBLISH)."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from taskfleet._connections.redis import connect_redis, translate_errors
from taskfleet.brokers.redis._keys import QueueKeys
from taskfleet.brokers.wake_feed import WakeBatch, WakeFeed
from taskfleet.errors import BrokerError
from taskfleet.urls import mask_url

#: Idle pub/sub connections are PINGed after this long, so a silently dead connection is noticed.
HEALTH_CHECK_INTERVAL_S = 30


class RedisWakeFeed(WakeFeed):
    """Wake notices from one Redis server. See ``WakeFeed``."""

    def __init__(self, url: str, *, socket_timeout_s: float) -> None:
        self._what = f"redis wake feed {mask_url(url)}"
        self._client = connect_redis(url, socket_timeout_s=socket_timeout_s,
                                     health_check_interval_s=HEALTH_CHECK_INTERVAL_S, error=BrokerError)
        # Typed from redis-py 8.2 on, untyped before: the ignore holds for both.
        self._pubsub: Any = self._client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
        #: channel -> queue, of every followed queue
        self._channels: dict[str, str] = {}

    def follow(self, queues: Collection[str]) -> None:
        wanted = {QueueKeys.of(queue).wake_channel: queue for queue in queues}
        added = [channel for channel in wanted if channel not in self._channels]
        gone = [channel for channel in self._channels if channel not in wanted]
        with translate_errors(self._what, "follow queues", BrokerError):
            if added:
                self._pubsub.subscribe(*added)
            if gone:
                self._pubsub.unsubscribe(*gone)
        self._channels = wanted

    def receive(self, timeout_s: float) -> WakeBatch:
        noticed: set[str] = set()
        confirmed: set[str] = set()
        deadline = time.monotonic() + max(0.0, timeout_s)
        with translate_errors(self._what, "receive notices", BrokerError):
            while True:
                got = noticed or confirmed
                wait = 0.0 if got else max(0.0, deadline - time.monotonic())
                if not self._channels:  # redis-py sleeps out the timeout when nothing is subscribed: so do we
                    time.sleep(wait)
                    return WakeBatch()
                message = self._pubsub.get_message(timeout=wait)
                if message is None:
                    if got or time.monotonic() >= deadline:
                        return WakeBatch(frozenset(noticed), frozenset(confirmed))
                    continue
                queue = self._channels.get(_text(message.get("channel")))
                if queue is None:
                    continue  # an unsubscribe confirmation, or a channel no longer followed
                if message["type"] == "message":
                    noticed.add(queue)
                elif message["type"] == "subscribe":
                    confirmed.add(queue)

    def close(self) -> None:
        try:
            self._pubsub.close()
            self._client.close()
        except Exception:  # noqa: BLE001, S110 - closing a feed whose server is gone must not fail
            pass


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
