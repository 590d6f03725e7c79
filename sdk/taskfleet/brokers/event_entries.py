"""Events packed into stream entries, and cursors that may point inside one: shared by the fleet stores whose
broker pays per stream entry (Redis, RabbitMQ).

Writing one stream entry per event made the broker server's work per entry most of what task events cost (three
events per task), so an ``emit_events`` batch is stored as few entries as possible: its events joined by newlines.
An event is one JSON document (``FleetEvent.to_json`` and the worker's hand-made encodings never write a raw newline:
JSON escapes it inside strings), so a newline separates events unambiguously; a raw newline that does come in can
only be whitespace between JSON tokens, and ``pack`` turns it into a space. A batch is cut into entries of at most
``MAX_EVENTS_PER_ENTRY`` events and about ``MAX_ENTRY_BYTES``.

A cursor names the last entry read, ``"<entry>"`` when all its events were read and ``"<entry>:<n>"`` when only its
first ``n`` were (a page ended inside it: ``read_events`` returns at most ``limit`` events).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from taskfleet.errors import ControlError

SEPARATOR = b"\n"
#: Most events stored in one stream entry.
MAX_EVENTS_PER_ENTRY = 1000
#: About the most bytes of one stream entry (an event larger than this gets an entry of its own): a quarter of a
#: segment of the smallest RabbitMQ events cap (1 MiB in segments of 256 KiB). Entries near a segment's size made
#: RabbitMQ drop every segment holding events, keeping none.
MAX_ENTRY_BYTES = 64 * 2**10
_CURSOR = re.compile(r"([^:]+)(?::(\d+))?")


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry to write: ``count`` events joined in ``payload``."""

    count: int
    payload: bytes


def pack(events: Sequence[bytes]) -> list[Entry]:
    """``events`` as entries, oldest first, each within ``MAX_EVENTS_PER_ENTRY`` and about ``MAX_ENTRY_BYTES``.
    The usual batch (small events, no raw newline) costs one join and one count per entry, not a step per event."""
    entries: list[Entry] = []
    total = sum(map(len, events)) + len(events)
    # Events of one batch are about the same size: this many of the average size fill 7/8 of an entry.
    step = max(1, min(MAX_EVENTS_PER_ENTRY, MAX_ENTRY_BYTES * 7 // 8 * len(events) // max(1, total)))
    for start in range(0, len(events), step):
        chunk = events[start:start + step]
        payload = SEPARATOR.join(chunk)
        if len(payload) <= MAX_ENTRY_BYTES and payload.count(SEPARATOR) == len(chunk) - 1:
            entries.append(Entry(len(chunk), payload))
        else:
            entries += _pack_each(chunk)
    return entries


def _pack_each(events: Sequence[bytes]) -> list[Entry]:
    """``pack`` one event at a time: for events with raw newlines, or too many bytes for one entry."""
    entries: list[Entry] = []
    chunk: list[bytes] = []
    size = 0
    for event in events:
        if SEPARATOR in event:
            event = event.replace(SEPARATOR, b" ")
        if chunk and size + len(event) > MAX_ENTRY_BYTES:
            entries.append(Entry(len(chunk), SEPARATOR.join(chunk)))
            chunk, size = [], 0
        chunk.append(event)
        size += len(event) + 1
    if chunk:
        entries.append(Entry(len(chunk), SEPARATOR.join(chunk)))
    return entries


def unpack(payload: bytes) -> list[bytes]:
    """The events of one entry (``pack``'s ``payload``), oldest first."""
    return payload.split(SEPARATOR)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a reader is: after the first ``read`` events of ``entry`` (all of them when ``read`` is None)."""

    entry: str
    read: int | None = None

    @classmethod
    def parse(cls, text: str, entry_pattern: re.Pattern[str]) -> Cursor:
        """The cursor ``text`` names; ``ControlError`` when it is not one whose entry part matches
        ``entry_pattern`` (the store's entry ids)."""
        match = _CURSOR.fullmatch(text)
        if match is None or not entry_pattern.fullmatch(match[1]):
            raise ControlError(f"not an event cursor of this store: {text!r}")
        return cls(match[1], None if match[2] is None else int(match[2]))

    def __str__(self) -> str:
        return self.entry if self.read is None else f"{self.entry}:{self.read}"


def take(entries: Sequence[tuple[str, list[bytes], int]], limit: int) -> tuple[list[bytes], Cursor | None]:
    """At most ``limit`` events of ``entries`` (each: the entry id, its events, how many of them were read before),
    oldest first, and the cursor after the last one taken (None when none was)."""
    out: list[bytes] = []
    cursor: Cursor | None = None
    for entry, events, skip in entries:
        room = limit - len(out)
        if room <= 0:
            break
        taken = events[skip:skip + room]
        if not taken:
            continue
        out += taken
        end = skip + len(taken)
        cursor = Cursor(entry, None if end >= len(events) else end)
    return out, cursor


def row_cursor(cursor: str | None) -> int:
    """The event number a cursor names on the stores that number their events (SQLite, the stub): None is 0
    (from the oldest kept); anything but a whole number is a ``ControlError``."""
    if cursor is None:
        return 0
    try:
        return int(cursor)
    except ValueError as exc:
        raise ControlError(f"not an event cursor of this store: {cursor!r}") from exc
