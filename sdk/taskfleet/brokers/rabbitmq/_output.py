"""Writing our own frames to a pika channel and pumping it with a deadline: what ``ConfirmPublisher`` (``_publisher``)
and ``StreamAppender`` (``_appender``) share.

pika internals, fenced by tests/unit/test_pika_internals.py: the asynchronous channel's ``_raise_if_not_open``, the
connection's ``_output_marshaled_frames`` (our bytes into pika's output buffer) and ``ioloop`` (its timers run
inside ``BlockingChannel._flush_output``, unlike the blocking connection's own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel


def write(channel: BlockingChannel, pending: list[bytes]) -> None:
    """Hand the frames of the ``pending`` messages to pika's output buffer as one write (pika's own publish makes a
    socket write per frame, three per message), then empty ``pending``. Raises when the channel is closed."""
    if pending:
        impl: Any = channel._impl
        impl._raise_if_not_open()
        impl.connection._output_marshaled_frames([b"".join(pending)])
        pending.clear()


def pump_until(channel: BlockingChannel, done: Callable[[], bool], timeout_s: float) -> bool:
    """Pump ``channel``'s connection until ``done()`` or ``timeout_s`` seconds have passed; returns ``done()``."""
    expired: list[bool] = []
    ioloop: Any = channel._impl.connection.ioloop
    timer = ioloop.call_later(max(0.0, timeout_s), lambda: expired.append(True))
    try:
        channel._flush_output(done, lambda: bool(expired))
    finally:
        ioloop.remove_timeout(timer)
    return done()
