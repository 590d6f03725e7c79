"""Specification of how the Redis and RabbitMQ fleet stores pack events into stream entries
(``taskfleet.brokers.event_entries``)."""

from __future__ import annotations

import re

import pytest

from taskfleet.brokers.event_entries import MAX_ENTRY_BYTES, MAX_EVENTS_PER_ENTRY, Cursor, pack, take, unpack
from taskfleet.errors import ControlError
from taskfleet.fleet.events import FleetEvent

_ID = re.compile(r"\d+(-\d+)?")


def test_a_batch_is_one_entry_that_unpacks_to_the_same_events() -> None:
    events = [b'{"a":1}', b"", b"\x00\xff not json"]

    entries = pack(events)

    assert [entry.count for entry in entries] == [3]
    assert unpack(entries[0].payload) == events


def test_a_large_batch_is_cut_by_count_and_by_bytes_in_order() -> None:
    many = [b"e%d" % i for i in range(2 * MAX_EVENTS_PER_ENTRY + 1)]
    big = [b"x" * (MAX_ENTRY_BYTES // 2) for _ in range(5)]

    by_count, by_bytes = pack(many), pack(big)

    assert [e.count for e in by_count] == [MAX_EVENTS_PER_ENTRY, MAX_EVENTS_PER_ENTRY, 1]
    assert [event for e in by_count for event in unpack(e.payload)] == many
    assert all(len(e.payload) <= MAX_ENTRY_BYTES for e in by_bytes)
    assert [event for e in by_bytes for event in unpack(e.payload)] == big


def test_an_event_never_holds_a_raw_newline_and_one_that_comes_in_becomes_json_whitespace() -> None:
    encoded = FleetEvent("task-failed", 1.0, {"traceback": "line 1\nline 2\r\n"}).to_json()
    assert b"\n" not in encoded

    entries = pack([b'{"a":\n1}', encoded])

    assert unpack(entries[0].payload) == [b'{"a": 1}', encoded]


def test_a_cursor_names_an_entry_and_maybe_how_many_of_its_events_were_read() -> None:
    assert Cursor.parse("5-1", _ID) == Cursor("5-1")
    assert Cursor.parse("5-1:7", _ID) == Cursor("5-1", 7)
    assert str(Cursor("5-1", 7)) == "5-1:7"
    for garbage in ["x", "5-1:", "5-1:x", ":3", "5-1:2:3"]:
        with pytest.raises(ControlError):
            Cursor.parse(garbage, _ID)


def test_take_stops_at_the_limit_inside_an_entry_and_resumes_there() -> None:
    entries = [("1", [b"a", b"b", b"c"], 1), ("2", [b"d", b"e"], 0)]

    assert take(entries, 3) == ([b"b", b"c", b"d"], Cursor("2", 1))
    assert take(entries, 2) == ([b"b", b"c"], Cursor("1"))
    assert take(entries, 10) == ([b"b", b"c", b"d", b"e"], Cursor("2"))
    assert take([], 10) == ([], None)
