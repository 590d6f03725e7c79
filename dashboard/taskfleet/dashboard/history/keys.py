"""The tasks' ordering key: ``seq``, their first event's timestamp in microseconds times 1024, plus a slot (0-1023)
for tasks first seen in the same microsecond. Newest first is ``seq`` descending; a time range is a ``seq`` range;
the page cursor is a ``seq``. Fits SQLite's 64-bit integers until the year 2262."""

from __future__ import annotations

#: Tasks that can share one microsecond before the next one's slots are used.
SLOTS = 1024


def seq_floor(timestamp: float) -> int:
    """The lowest ``seq`` of a task first seen at ``timestamp`` (Unix seconds; earlier than 1970 counts as 1970)."""
    return max(0, int(timestamp * 1_000_000)) * SLOTS


def seq_after(timestamp: float) -> int:
    """The lowest ``seq`` of a task first seen after ``timestamp``'s microsecond (an inclusive upper bound)."""
    return seq_floor(timestamp) + SLOTS


def timestamp_of(seq: int) -> float:
    return (seq // SLOTS) / 1_000_000


def encode_cursor(seq: int) -> str:
    return str(seq)


def decode_cursor(cursor: str) -> int:
    """The ``seq`` a page cursor stands for; ``ValueError`` for text that is not one."""
    seq = int(cursor)
    if seq < 0:
        raise ValueError(f"bad cursor {cursor!r}")
    return seq
