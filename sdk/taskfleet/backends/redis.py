"""The Redis result backend: one key per task id, and a pub/sub channel of the same name that pushes every stored
record to its waiters.

``store`` writes ``tf:result:<task id>`` with an expiry and publishes the same bytes in one round trip. ``wait``
subscribes first and only then reads the key, so a record stored at any moment is either read or pushed to it.

``wait`` runs on RESP3 connections that stay open, and subscribed, between waits: the next wait on a connection
sends UNSUBSCRIBE (from everything), SUBSCRIBE and GET in one write (RESP3 lets a subscribed connection run GET, and
the server runs the three in order), then reads past the confirmations and any message that reached the old
subscription until its own confirmation. So a wait costs one round trip before the result is pushed, and none
after.

Chord joins and saved groups: ``taskfleet.backends.redis_joins`` (a chord part is one script call).

Every stored record is pushed, so a waiter sees each state update (``updates``, ``wait(on_update=)``: STARTED,
RETRY, a task's own PROGRESS...) from the moment it subscribed, in order, as soon as it is stored: the records
pushed before the GET's reply, then the one GET read (the newest). SET and PUBLISH are two commands, so GET may read
a record whose message arrives after its reply; a pushed record equal to the last one seen is skipped.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskfleet._connections.redis import (
    EvalSha,
    HotConnections,
    connect_redis,
    keep_pushes,
    pack,
    translate_errors,
)
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.backends.joins import ChordPart, JoinDecision
from taskfleet.backends.redis_joins import CHORD_PART_LUA, chord_keys, group_key, read_decision
from taskfleet.backends.redis_waits import ManyWaits
from taskfleet.errors import ResultError, ResultTimeout
from taskfleet.serializers import get_serializer
from taskfleet.settings import BackendSettings
from taskfleet.states import State
from taskfleet.urls import mask_url

RESULT_PREFIX = "tf:result:"


def result_key(task_id: str) -> str:
    """The key, and the pub/sub channel, of ``task_id``'s result."""
    return RESULT_PREFIX + task_id


class RedisBackend(ResultBackend):
    """A ``ResultBackend`` on one Redis server (>= 6.0, for RESP3). Thread-safe: every call (and every ``wait``)
    has a connection to itself while it runs."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._serializer = get_serializer(settings.serializer)
        self._expires_ms = max(1, round(settings.result_expires_s * 1000))
        self._masked_url = mask_url(settings.url)
        self._client = connect_redis(settings.url, socket_timeout_s=settings.socket_timeout_s,
                                     health_check_interval_s=30, error=ResultError)
        self._hot = HotConnections(self._client)
        self._listeners = HotConnections(self._client, protocol=3)
        self._chord_script = EvalSha(CHORD_PART_LUA)
        self._many_waits = ManyWaits(self._listeners.take)

    def store(self, record: ResultRecord) -> None:
        """Save ``record`` for ``result_expires_s`` and push it to every waiter (one round trip). STARTED, which
        no wait returns on, is written behind: this returns once it is sent, and the thread's next call reads its
        replies (on the same connection, so the server applies the records in the order they were stored)."""
        key = result_key(record.task_id)
        data = record.encode(self._serializer)
        payload = pack("SET", key, data, "PX", self._expires_ms) + pack("PUBLISH", key, data)
        with self._translate("store"):
            if record.state is State.STARTED:
                self._hot.send_behind(payload, 2)
                return
            for reply in self._hot.call(payload, 2):
                if isinstance(reply, ResponseError):
                    raise reply

    def get(self, task_id: str) -> ResultRecord | None:
        """The stored record of ``task_id``, or None when there is none (pending, unknown or expired)."""
        with self._translate("get"):
            (data,) = self._hot.call(pack("GET", result_key(task_id)))
            if isinstance(data, ResponseError):
                raise data
        return self._decode(data)

    def get_many(self, task_ids: Sequence[str]) -> list[ResultRecord | None]:
        """The stored records of ``task_ids`` (None where there is none), with one MGET."""
        if not task_ids:
            return []
        with self._translate("get"):
            (values,) = self._hot.call(pack("MGET", *(result_key(task_id) for task_id in task_ids)))
            if isinstance(values, ResponseError):
                raise values
        return [self._decode(data) for data in values]

    def wait_any(self, task_ids: Sequence[str], timeout_s: float, wake: socket.socket) -> list[ResultRecord]:
        """``ResultBackend.wait_any``, pushed: one connection subscribed to every id's channel
        (``taskfleet.backends.redis_waits``), so a record is seen about one round trip after it is stored."""
        with self._translate("wait"):
            try:
                found = self._many_waits.wait([result_key(task_id).encode() for task_id in task_ids], timeout_s,
                                              wake)
            except BaseException:
                self._many_waits.reset()
                raise
        records = [self._decode(data) for data in found.values()]
        return [record for record in records if record is not None and record.ready]

    def updates(self, task_id: str, timeout_s: float | None) -> Iterator[ResultRecord]:
        """Yield ``task_id``'s records as they are stored, until a ready one (``ResultBackend.updates``): the stored
        record read when the iteration starts, then each one pushed to the channel. ``timeout_s`` None waits
        forever; raises ``ResultTimeout`` when the time runs out. ``wait`` (of ``ResultBackend``) is built on it."""
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        channel = result_key(task_id).encode()
        with self._translate("wait"), self._listening() as conn:
            seen: list[bytes] = conn.retry.call_with_retry(lambda: self._subscribe_and_get(conn, channel),
                                                           lambda _error: conn.disconnect())
            for data in seen:
                record = self._decode(data)
                assert record is not None
                yield record
                if record.ready:
                    return
            last: bytes | None = seen[-1] if seen else None
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ResultTimeout(f"task {task_id} not ready after {timeout_s}s")
                if not conn.can_read(timeout=remaining):
                    continue
                pushed = _pushed(conn.read_response(push_request=True), channel)
                if pushed is None or pushed == last:  # not ours, or the record the GET read (module notes)
                    continue
                last = pushed
                record = self._decode(pushed)
                assert record is not None
                yield record
                if record.ready:
                    return

    def forget(self, task_id: str) -> None:
        """Delete the stored record of ``task_id``."""
        with self._translate("forget"):
            self._client.delete(result_key(task_id))

    def save_group(self, group_id: str, data: Mapping[str, Any]) -> None:
        with self._translate("save_group"):
            self._call(pack("SET", group_key(group_id), self._serializer.dumps(dict(data)), "PX", self._expires_ms))

    def restore_group(self, group_id: str) -> dict[str, Any] | None:
        with self._translate("restore_group"):
            (data,) = self._call(pack("GET", group_key(group_id)))
        return None if data is None else dict(self._serializer.loads(_as_bytes(data)))

    def forget_group(self, group_id: str) -> None:
        with self._translate("forget_group"):
            self._call(pack("DEL", group_key(group_id)))

    def chord_part(self, chord_id: str, index: int, size: int, part: ChordPart) -> JoinDecision:
        """Record and decide in one script call (one round trip; ``taskfleet.backends.redis_joins``)."""
        payload = pack("EVALSHA", self._chord_script.sha, 2, *chord_keys(chord_id), index, size,
                       part.encode(self._serializer), self._expires_ms)
        with self._translate("chord_part"):
            (reply,) = self._hot.call_scripts([self._chord_script], payload)
        return read_decision(reply, self._serializer)

    def chord_fired(self, chord_id: str) -> None:
        state = chord_keys(chord_id)[1]
        with self._translate("chord_fired"):
            self._call(pack("HSET", state, "done", 1) + pack("PEXPIRE", state, self._expires_ms), 2)

    def ping(self) -> None:
        """PING the server; raises ``BrokerConnectionError`` when it does not answer."""
        with self._translate("ping"):
            self._client.ping()

    def close(self) -> None:
        """Close every pooled connection."""
        self._many_waits.reset()
        self._listeners.close()
        self._hot.close()
        self._client.close()

    # -- helpers ------------------------------------------------------------------------------------------------

    def _call(self, payload: bytes, replies: int = 1) -> list[Any]:
        out = self._hot.call(payload, replies)
        for reply in out:
            if isinstance(reply, ResponseError):
                raise reply
        return out

    @contextmanager
    def _listening(self) -> Iterator[Any]:
        """A RESP3 connection for one wait, to itself. When the wait ends in step with the server (a result, a
        timeout, a record it cannot decode) the connection is kept, still subscribed, for the next wait; after a
        connection error or an interruption midway it is closed."""
        conn = self._listeners.take()
        keep_pushes(conn, _as_is)  # pushes are read as replies here
        try:
            yield conn
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._listeners.discard(conn)
            raise
        except GeneratorExit:  # an ``updates`` iteration given up between two records: in step with the server
            self._listeners.give_back(conn)
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt and the like: maybe midway through a reply
                self._listeners.discard(conn)
                raise
            self._listeners.give_back(conn)
            raise
        self._listeners.give_back(conn)

    def _subscribe_and_get(self, conn: Any, channel: bytes) -> list[bytes]:
        """Subscribe to ``channel`` (and nothing else) and read the stored record, in one round trip; returns the
        encoded records stored since, in order: those pushed before the GET's reply, then the one GET read unless
        it is the last of them. What the previous wait on this connection left unread (messages to its channel,
        the confirmations) comes before this subscription's confirmation and is skipped."""
        conn.send_packed_command([pack("UNSUBSCRIBE") + pack("SUBSCRIBE", channel) + pack("GET", channel)])
        while True:
            reply = conn.read_response(push_request=True)
            if isinstance(reply, list) and len(reply) >= 2 and reply[0] == b"subscribe" and reply[1] == channel:
                break
        seen: list[bytes] = []
        while True:
            # Replies to GET are bytes or None; pushes (messages stored before GET ran) are lists.
            reply = conn.read_response(push_request=True)
            if not isinstance(reply, list):
                # GET ran after every store whose message came before its reply, so it read the newest record.
                if reply is not None and (not seen or _as_bytes(reply) != seen[-1]):
                    seen.append(_as_bytes(reply))
                return seen
            data = _pushed(reply, channel)
            if data is not None:
                seen.append(data)

    def _decode(self, data: Any) -> ResultRecord | None:
        if data is None:
            return None
        return ResultRecord.decode(_as_bytes(data), accept=self.settings.accept_content)

    def _translate(self, action: str) -> AbstractContextManager[None]:
        return translate_errors(f"redis result backend {self._masked_url}", action, ResultError)


def _pushed(reply: Any, channel: bytes) -> bytes | None:
    """The encoded record of a message pushed to ``channel``, or None for any other reply."""
    if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message" and reply[1] == channel):
        return None
    return _as_bytes(reply[2])


def _as_is(push: Any) -> Any:
    return push


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
