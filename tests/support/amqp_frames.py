"""Reading back what a client wrote to pika's output buffer, for the fakes that stand in for a channel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pika import frame


def decoded_frames(chunks: list[bytes]) -> Iterator[Any]:
    """The AMQP frames in ``chunks`` (what ``Connection._output_marshaled_frames`` was given), in order."""
    data = b"".join(chunks)
    while data:
        used, parsed = frame.decode_frame(data)
        data = data[used:]
        yield parsed
