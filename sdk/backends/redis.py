"""The Redis result backend: one key per task id, and a pub/sub channel of the same name that pushes every stored
record to its waiters.

``store`` writes ``tf:result:<task id>`` with an expiry and publishes the same bytes in one round trip. ``wait``
subscribes first and only then reads the key, so a record stored at any moment is either read or pushed to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from redis.exceptions import RedisError

from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.errors import ResultError, ResultTimeout
from taskfleet.redis_connection import connect_redis, translate_errors
from taskfleet.serializers import get_serializer
from taskfleet.settings import BackendSettings
from taskfleet.states import READY_STATES
from taskfleet.urls import mask_url

RESULT_PREFIX = "tf:result:"


def result_key(task_id: str) -> str:
    """The key, and the pub/sub channel, of ``task_id``'s result."""
    return RESULT_PREFIX + task_id


class RedisBackend(ResultBackend):
    """A ``ResultBackend`` on one Redis server. Thread-safe: every call (and every ``wait``) uses its own pooled
    connection."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._serializer = get_serializer(settings.serializer)
        self._expires_ms = max(1, round(settings.result_expires_s * 1000))
        self._masked_url = mask_url(settings.url)
        self._client = connect_redis(settings.url, socket_timeout_s=settings.socket_timeout_s,
                                     health_check_interval_s=30, error=ResultError)

    def store(self, record: ResultRecord) -> None:
        """Save ``record`` for ``result_expires_s`` and push it to every waiter (one round trip)."""
        key = result_key(record.task_id)
        data = record.encode(self._serializer)
        with self._translate("store"):
            pipe = self._client.pipeline(transaction=False)
            pipe.set(key, data, px=self._expires_ms)
            pipe.publish(key, data)
            pipe.execute()

    def get(self, task_id: str) -> ResultRecord | None:
        """The stored record of ``task_id``, or None when there is none (pending, unknown or expired)."""
        with self._translate("get"):
            data = self._client.get(result_key(task_id))
        if data is None:
            return None
        return ResultRecord.decode(_as_bytes(data), accept=self.settings.accept_content)

    def wait(self, task_id: str, timeout_s: float | None) -> ResultRecord:
        """Block until ``task_id`` is ready (SUCCESS, FAILURE or REVOKED) and return its record; ``timeout_s`` None
        waits forever. Raises ``ResultTimeout`` when the time runs out."""
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        channel = result_key(task_id)
        with self._translate("wait"), self._subscribed(channel) as conn:
            record = self.get(task_id)
            while record is None or record.state not in READY_STATES:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ResultTimeout(f"task {task_id} not ready after {timeout_s}s")
                if not conn.can_read(timeout=remaining):
                    continue
                record = self._decode_push(conn.read_response(push_request=True), channel)
            return record

    def forget(self, task_id: str) -> None:
        """Delete the stored record of ``task_id``."""
        with self._translate("forget"):
            self._client.delete(result_key(task_id))

    def ping(self) -> None:
        """PING the server; raises ``BrokerConnectionError`` when it does not answer."""
        with self._translate("ping"):
            self._client.ping()

    def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()

    # -- helpers ------------------------------------------------------------------------------------------------

    @contextmanager
    def _subscribed(self, channel: str) -> Iterator[Any]:
        """A pooled connection subscribed to ``channel``, the subscription confirmed (so everything published from
        then on reaches it). Unsubscribed and drained afterwards, so the pool gets back a clean connection."""
        pool = self._client.connection_pool
        # redis-py's Connection methods are untyped; Any keeps strict mypy meaningful everywhere else.
        conn: Any = pool.get_connection()
        subscribed = False
        try:
            conn.send_command("SUBSCRIBE", channel)
            _read_until(conn, b"subscribe")
            subscribed = True
            yield conn
        finally:
            try:
                if subscribed:
                    # No health-check PING here: in subscribed mode its reply would not be a plain PONG.
                    conn.send_command("UNSUBSCRIBE", channel, check_health=False)
                    _read_until(conn, b"unsubscribe")
                else:
                    conn.disconnect()
            except (RedisError, OSError):
                conn.disconnect()  # never hand a half-subscribed connection back to the pool
            pool.release(conn)

    def _decode_push(self, reply: Any, channel: str) -> ResultRecord | None:
        if not (isinstance(reply, list) and len(reply) == 3 and _as_bytes(reply[0]) == b"message"):
            return None
        if _as_bytes(reply[1]) != channel.encode():
            return None
        return ResultRecord.decode(_as_bytes(reply[2]), accept=self.settings.accept_content)

    def _translate(self, action: str) -> AbstractContextManager[None]:
        return translate_errors(f"redis result backend {self._masked_url}", action, ResultError)


def _read_until(conn: Any, kind: bytes) -> None:
    """Read replies until the pub/sub confirmation ``kind`` (messages that arrive before it are not wanted)."""
    while True:
        reply = conn.read_response(push_request=True)
        if isinstance(reply, list) and reply and _as_bytes(reply[0]) == kind:
            return


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
