"""Specification of the chord join kept by a result backend (taskfleet.backends.joins): each part counted once by
header index, the body fired exactly once (by the part that completed the header, again only until its firing is
marked done), a failure failing the chord once. Run on the in-process stub backend and on SQLite (a file); the
Redis backend's script is held to the same specification in tests/integration/test_canvas.py."""

from __future__ import annotations

import pytest

from taskfleet.backends import ResultBackend
from taskfleet.backends.joins import ChordPart, JoinAction

OK = ChordPart(True, "ok")


@pytest.fixture
def backend(stub_or_sqlite_backend: ResultBackend) -> ResultBackend:
    return stub_or_sqlite_backend


def _failed(task_id: str) -> ChordPart:
    return ChordPart(False, {"task_id": task_id, "task": "t", "exc_type": "builtins.ValueError",
                             "exc_message": "boom"})


def test_parts_wait_until_the_last_one_fires_the_body_with_every_result_in_header_order(
        backend: ResultBackend) -> None:
    assert backend.chord_part("c", 2, 3, ChordPart(True, "third")).action is JoinAction.WAIT
    assert backend.chord_part("c", 0, 3, ChordPart(True, "first")).action is JoinAction.WAIT

    fired = backend.chord_part("c", 1, 3, ChordPart(True, {"second": [2]}))

    assert fired.action is JoinAction.FIRE
    assert fired.results == ["first", {"second": [2]}, "third"]


def test_a_part_recorded_twice_is_counted_once(backend: ResultBackend) -> None:
    backend.chord_part("c", 0, 2, OK)

    assert backend.chord_part("c", 0, 2, ChordPart(True, "again")).action is JoinAction.WAIT
    fired = backend.chord_part("c", 1, 2, OK)
    assert fired.action is JoinAction.FIRE
    assert fired.results == ["ok", "ok"], "the first record of an index counts"


def test_only_the_part_that_fired_fires_again_and_only_until_the_firing_is_marked_done(
        backend: ResultBackend) -> None:
    backend.chord_part("c", 0, 2, OK)
    assert backend.chord_part("c", 1, 2, OK).action is JoinAction.FIRE

    assert backend.chord_part("c", 0, 2, OK).action is not JoinAction.FIRE, "another part never fires"
    assert backend.chord_part("c", 1, 2, OK).action is JoinAction.FIRE, "its redelivery fires again"
    backend.chord_fired("c")
    assert backend.chord_part("c", 1, 2, OK).action is JoinAction.DONE
    assert backend.chord_part("c", 0, 2, OK).action is JoinAction.DONE


def test_the_first_failed_part_fails_the_chord_once_and_the_body_never_fires(backend: ResultBackend) -> None:
    backend.chord_part("c", 0, 3, OK)

    failed = backend.chord_part("c", 1, 3, _failed("t1"))
    assert failed.action is JoinAction.FAIL
    assert failed.failure["task_id"] == "t1"

    assert backend.chord_part("c", 2, 3, _failed("t2")).action is JoinAction.WAIT, "a second failure is not news"
    assert backend.chord_part("c", 2, 3, OK).action is JoinAction.WAIT, "the header is complete: still no body"
    assert backend.chord_part("c", 1, 3, _failed("t1")).action is JoinAction.FAIL, "the failing part redoes it"
    backend.chord_fired("c")
    assert backend.chord_part("c", 1, 3, _failed("t1")).action is JoinAction.DONE


def test_a_part_that_failed_first_stays_failed_when_its_task_later_succeeds(backend: ResultBackend) -> None:
    assert backend.chord_part("c", 0, 2, _failed("t0")).action is JoinAction.FAIL

    again = backend.chord_part("c", 0, 2, OK)  # an ignore_result task run again after a crash
    assert again.action is JoinAction.FAIL
    assert again.failure["task_id"] == "t0"


def test_a_one_task_header_fires_at_once(backend: ResultBackend) -> None:
    fired = backend.chord_part("c", 0, 1, ChordPart(True, 7))
    assert (fired.action, fired.results) == (JoinAction.FIRE, [7])


def test_chords_are_joined_apart(backend: ResultBackend) -> None:
    backend.chord_part("a", 0, 2, OK)
    assert backend.chord_part("b", 0, 2, OK).action is JoinAction.WAIT
    assert backend.chord_part("a", 1, 2, OK).action is JoinAction.FIRE


def test_a_saved_group_is_restored_and_forgotten(backend: ResultBackend) -> None:
    backend.save_group("g", {"results": ["a", {"group": "h", "results": ["b"]}]})

    assert backend.restore_group("g") == {"results": ["a", {"group": "h", "results": ["b"]}]}
    assert backend.restore_group("unknown") is None
    backend.forget_group("g")
    assert backend.restore_group("g") is None
