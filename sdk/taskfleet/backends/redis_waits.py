"""Many waits on one Redis connection: ``RedisBackend.wait_any``, with which the asyncio result waiter
(``taskfleet.async_calls``) waits for every pending ``get_async`` of a process at once, pushed, not polled.

One RESP3 connection stays subscribed to the result channel of every pending task id. Each call brings the
subscriptions in line with the ids it is given, in one write: UNSUBSCRIBE from the ids no longer wanted, SUBSCRIBE to
the new ones and a GET of each new one (so a record stored before the subscription is read, as ``wait`` reads it),
then reads what comes (confirmations, the GET replies, the records pushed meanwhile) and, when no record came, waits
for one until the timeout or until the caller's ``wake`` socket is readable (new ids to subscribe to).

Replies arrive in the order the server ran the commands and stored the records, so the last record seen per channel
is its newest. The connection's socket is watched with ``select`` beside ``wake`` (redis-py's ``Connection._sock``,
checked by tests/unit/test_redis_internals.py with the others).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from taskfleet._connections.redis import keep_pushes, pack


class ManyWaits:
    """The subscribed connection of ``RedisBackend.wait_any`` and what it is subscribed to. One thread at a time."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._subscribed: set[bytes] = set()

    def reset(self) -> None:
        """Close the connection (after an error midway): the next ``wait`` subscribes afresh."""
        if self._conn is not None:
            self._conn.disconnect()
        self._conn, self._subscribed = None, set()

    def wait(self, channels: Sequence[bytes], timeout_s: float, wake: socket.socket) -> dict[bytes, bytes]:
        """The newest encoded record of each of ``channels`` that was read or pushed (possibly none), after
        subscribing to exactly ``channels``; waits up to ``timeout_s`` for one when none came at once, or until
        ``wake`` is readable."""
        wanted = set(channels)
        found = self._subscribe(channels, wanted)
        if self._conn is None or not self._subscribed:
            if not found and timeout_s > 0:
                select.select([wake], [], [], timeout_s)
            return found
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            while self._conn.can_read(timeout=0):
                _keep(found, self._conn.read_response(push_request=True), wanted)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            readable, _, _ = select.select([self._conn._sock, wake], [], [], remaining)
            if wake in readable:  # new ids: the caller calls again with them
                return found

    def _subscribe(self, channels: Sequence[bytes], wanted: set[bytes]) -> dict[bytes, bytes]:
        """Subscribe to exactly ``channels`` (one write) and return the records the GETs of the new ones read and
        those pushed meanwhile."""
        new = [channel for channel in channels if channel not in self._subscribed]
        gone = [channel for channel in self._subscribed if channel not in wanted]
        found: dict[bytes, bytes] = {}
        if not new and not gone:
            return found
        if self._conn is None:
            self._conn = self._connect()
            keep_pushes(self._conn, _as_is)  # pushes are read as replies here
        payload = pack("UNSUBSCRIBE", *gone) if gone else b""
        if new:
            payload += pack("SUBSCRIBE", *new) + b"".join(pack("GET", channel) for channel in new)
        self._conn.send_packed_command([payload], check_health=False)
        self._subscribed = (self._subscribed - set(gone)) | set(new)
        for channel in new:  # GET replies are bytes or None; everything else read meanwhile is a push
            while isinstance(reply := self._conn.read_response(push_request=True), list):
                _keep(found, reply, wanted)
            if reply is not None:
                found[channel] = _as_bytes(reply)
        return found


def _keep(found: dict[bytes, bytes], reply: Any, wanted: set[bytes]) -> None:
    """Record a pushed message of a wanted channel; skip confirmations and messages of channels given up."""
    if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message" and reply[1] in wanted:
        found[reply[1]] = _as_bytes(reply[2])


def _as_is(push: Any) -> Any:
    return push


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
