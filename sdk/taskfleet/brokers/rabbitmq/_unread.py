"""The deliveries in what a dead worker child's connection received and never read.

RabbitMQ pushes deliveries into a consumer's socket as soon as its prefetch has room. A child reports each delivery
to its supervisor once it has read it (taskfleet.worker.child), so one that dies just after a push (a task that
kills its process as it starts, with the rest of the burst still in flight) leaves deliveries the supervisor does
not know. They never started, yet closing the connection would give them back counted as lost. The supervisor
holds a copy of the child's socket (taskfleet.worker.broker_sockets) and reads what is left in it; this finds the
deliveries there, so that they can be given back uncounted like the child's other unstarted ones.

The bytes may begin inside a frame (the child read part of it) and end inside one: a delivery is taken from a
``basic.deliver`` method frame found whole, followed at once by its whole content header (message id, headers);
a body found whole is skipped. Over TLS the bytes are ciphertext and nothing is found: those deliveries stay counted.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import pika.frame
import pika.spec

from taskfleet.brokers.rabbitmq import _topology as topo

#: The start of a ``basic.deliver`` method frame's payload: class 60 (basic), method 60 (deliver).
_DELIVER = struct.pack(">HH", 60, 60)
_HEADER_BYTES = 7  # frame type, channel, payload size


class Unread(NamedTuple):
    """A delivery found in unread bytes: its task queue, message id and headers."""

    queue: str
    message_id: str
    headers: dict[str, Any]


def deliveries_in(data: bytes) -> list[Unread]:
    """The deliveries whose ``basic.deliver`` and content header are whole in ``data`` (see the module notes), in
    order. One without a message id is left out (nothing could match its redelivery)."""
    found: list[Unread] = []
    pos = 0
    while (at := data.find(_DELIVER, pos)) >= 0:
        start = at - _HEADER_BYTES
        pos = at + 1
        if start < 0 or data[start] != pika.spec.FRAME_METHOD:
            continue
        method, props, end = _deliver_and_header(data, start)
        if method is None or props is None:
            continue
        pos = end
        if props.message_id:
            found.append(Unread(topo.queue_of(method.exchange, method.routing_key), str(props.message_id),
                                dict(props.headers or {})))
    return found


def _deliver_and_header(data: bytes, start: int) -> tuple[Any, Any, int]:
    """The ``basic.deliver`` method at ``start`` and the content header right after it, on the same channel, and
    where the delivery ends (past its body when that is whole, else past the header); ``(None, None, start)`` when
    the method or the header is not there whole."""
    try:
        used, frame = _frame_at(data, start)
        if not used or not isinstance(frame, pika.frame.Method) or not isinstance(frame.method,
                                                                                   pika.spec.Basic.Deliver):
            return None, None, start
        more, header = _frame_at(data, start + used)
    except Exception:  # noqa: BLE001 - bytes that only looked like a frame: not a delivery
        return None, None, start
    if not more or not isinstance(header, pika.frame.Header) or header.channel_number != frame.channel_number:
        return None, None, start
    return frame.method, header.properties, _past_body(data, start + used + more, header)


def _past_body(data: bytes, pos: int, header: Any) -> int:
    """Where the body frames after ``header`` (at ``pos``) end, or ``pos`` when they are not all there: a body is
    skipped whole, so that bytes in it are never taken for a delivery."""
    left, at = header.body_size, pos
    while left > 0:
        try:
            used, frame = _frame_at(data, at)
        except Exception:  # noqa: BLE001 - not a body frame after all
            return pos
        if not used or not isinstance(frame, pika.frame.Body) or frame.channel_number != header.channel_number:
            return pos
        left -= len(frame.fragment)
        at += used
    return at


def _frame_at(data: bytes, at: int) -> tuple[int, Any]:
    """pika's ``decode_frame`` of the frame at ``at``, given only that frame's bytes (not a copy of all the rest)."""
    if len(data) < at + _HEADER_BYTES:
        return 0, None
    size: int = struct.unpack_from(">L", data, at + 3)[0]
    used, frame = pika.frame.decode_frame(data[at:at + _HEADER_BYTES + size + 1])
    return int(used), frame
