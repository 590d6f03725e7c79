"""The fleet store's stream queues on RabbitMQ: their names and arguments, and reading one to its end.

A stream (``x-queue-type: stream``, RabbitMQ >= 3.9) is an append-only log that consumers read from an offset of
their choice without removing anything; RabbitMQ drops old *segments* by age (``x-max-age``) and by size
(``x-max-length-bytes``), a whole segment (``x-stream-max-segment-size-bytes``) at a time, checked when a new
segment starts. A reader cannot ask where the end is, so ``read_stream`` publishes a unique *marker* message on its
own channel once its consumer is in place and reads until the marker comes back: everything stored before the marker
has then been read. Markers are tiny, and every reader skips them.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from taskfleet.brokers.rabbitmq import _topology as topo
from taskfleet.errors import BrokerConnectionError

FLEET_PREFIX = topo.PREFIX + "fleet."
#: Header of a marker message (its value: the reader's token).
MARKER_HEADER = "x-taskfleet-marker"
#: Messages a stream consumer may hold unacked (RabbitMQ requires a prefetch on stream consumers).
STREAM_PREFETCH = 1000
#: How often a reader wakes while waiting, to check its deadlines (seconds).
WAKE_S = 0.05
#: What ``x-max-length-bytes`` of the events stream assumes an event takes (bytes): its cap is
#: ``events_max_len * ASSUMED_EVENT_BYTES``, at least ``MIN_EVENTS_BYTES``, as streams are capped by size, not count.
ASSUMED_EVENT_BYTES = 512
#: The smallest cap of the events stream (bytes): RabbitMQ stores a batch of events as one chunk and drops whole
#: segments, so a cap smaller than a few batches could leave a reader nothing at all.
MIN_EVENTS_BYTES = 2**20
#: The registry keeps heartbeats this long (RabbitMQ drops older segments): a record's ttl may be at most this.
REGISTRY_MAX_AGE = "10m"
#: Revocations are kept this long at most (a longer expiry is cut to it) and within this many bytes.
REVOCATIONS_MAX_AGE = "7D"
REVOCATIONS_MAX_BYTES = 256 * 2**20
REGISTRY_MAX_BYTES = 64 * 2**20
_SEGMENT_BYTES = 4 * 2**20


def fleet_name(namespace: str, what: str) -> str:
    """``taskfleet.fleet.<namespace>.<what>``: the control exchange and the three streams of an app."""
    return f"{FLEET_PREFIX}{namespace}.{what}"


def events_max_bytes(events_max_len: int) -> int:
    """The byte cap of an events stream that should keep about ``events_max_len`` events."""
    return max(MIN_EVENTS_BYTES, events_max_len * ASSUMED_EVENT_BYTES)


def stream_arguments(*, max_bytes: int, max_age: str | None = None) -> dict[str, Any]:
    """Arguments of a stream capped at ``max_bytes`` (and ``max_age``), with segments small enough (a quarter of the
    cap, at most 4 MiB) that the cap is kept to within a quarter."""
    arguments: dict[str, Any] = {"x-queue-type": "stream", "x-max-length-bytes": max_bytes,
                                 "x-stream-max-segment-size-bytes": max(1024, min(_SEGMENT_BYTES, max_bytes // 4))}
    if max_age is not None:
        arguments["x-max-age"] = max_age
    return arguments


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message read from a stream: its offset, headers and body."""

    offset: int
    headers: dict[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class StreamRead:
    """What ``read_stream`` read (markers left out), and the offset of the last message it saw, a marker included
    (None when it saw none): the next read starts after it."""

    messages: list[StreamMessage]
    last_offset: int | None


#: RabbitMQ's reply code when it closes a connection for an internal error: what a consumer attaching to a stream
#: whose members have not started yet gets (a stream declared a moment ago, on a loaded server).
INTERNAL_ERROR = 541
#: How long a read waits before it tries such a stream again, on a new connection.
NOT_READY_PAUSE_S = 0.2


def not_ready(exc: BaseException) -> bool:
    """Whether ``exc`` (raised by a read) is RabbitMQ closing the connection with ``INTERNAL_ERROR``: the stream was
    not ready, and the read may be tried again."""
    cause = exc.__cause__
    return isinstance(cause, pika.exceptions.ConnectionClosedByBroker) and cause.reply_code == INTERNAL_ERROR


def read_stream(connection: BlockingConnection, queue: str, offset: Any, *, limit: int | None = None,
                wait_s: float = 0.0, end_within_s: float) -> StreamRead:
    """Read ``queue`` from ``offset`` (an ``x-stream-offset``: ``"first"``, ``"last"``, a number, a datetime) to
    its end, or until ``limit`` messages; when there were none and ``wait_s`` > 0, wait that long for one, then read
    to the end again. ``BrokerConnectionError`` when the end is not reached within ``end_within_s`` seconds. Runs on
    a channel of its own, closed before it returns (the caller drives ``connection``)."""
    channel = connection.channel()
    arrived: deque[tuple[int, Any, bytes]] = deque()  # (delivery tag, properties, body)
    try:
        channel.basic_qos(prefetch_count=STREAM_PREFETCH)
        channel.basic_consume(queue, lambda _ch, method, properties, body: arrived.append(
            (method.delivery_tag, properties, body)), arguments={"x-stream-offset": offset})
        got: list[StreamMessage] = []
        last: int | None = None
        token = _mark(channel, queue)
        end_by = time.monotonic() + end_within_s
        wait_until = time.monotonic() + max(0.0, wait_s)
        unacked = 0
        at_end = False
        while True:
            if not arrived:
                if not at_end and time.monotonic() > end_by:
                    raise BrokerConnectionError(f"rabbitmq stream {queue} did not show its end within "
                                                f"{end_within_s:.0f}s")
                if at_end and time.monotonic() >= wait_until:
                    break
                connection.process_data_events(time_limit=WAKE_S)
                continue
            tag, properties, body = arrived.popleft()
            unacked += 1
            if unacked >= STREAM_PREFETCH // 2:
                channel.basic_ack(tag, multiple=True)
                unacked = 0
            headers = dict(properties.headers or {})
            last = int(headers.get("x-stream-offset", last or 0))
            marker = headers.get(MARKER_HEADER)
            if marker is None:
                got.append(StreamMessage(last, headers, body))
                if limit is not None and len(got) >= limit:
                    break
                if at_end:  # the first message after the end, while waiting: read on to a new end
                    at_end, token = False, _mark(channel, queue)
                    end_by = time.monotonic() + end_within_s
            elif _text(marker) == token:
                at_end = True
                if got or time.monotonic() >= wait_until:
                    break
        return StreamRead(got, last)
    finally:
        _close(channel)


def _close(channel: Any) -> None:
    """Close ``channel`` without cancelling its consumer first: pika's ``BlockingChannel.close`` cancels, then
    rejects what arrives until the cancel is confirmed, and RabbitMQ closes the whole connection on a reject from a
    stream. The asynchronous channel under it (``_impl``) sends the cancel and the close together and ignores what
    arrives meanwhile; ``_flush_output`` waits for the close (pika internals, fenced by
    tests/unit/test_pika_internals.py)."""
    with contextlib.suppress(Exception):  # a broken channel goes with its connection
        if channel.is_open:
            channel._impl.close()
            channel._flush_output(lambda: channel.is_closed)


def _mark(channel: Any, queue: str) -> str:
    """Publish a new marker to ``queue`` on ``channel`` (after its consumer started); returns its token."""
    token = uuid.uuid4().hex
    channel.basic_publish("", queue, b"", pika.BasicProperties(headers={MARKER_HEADER: token}))
    return token


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
