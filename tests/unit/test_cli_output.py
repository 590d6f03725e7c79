"""Specification of what the broker commands show (taskfleet.cli.*_command(s)): pure functions from broker data to
cells, questions and JSON. The commands themselves run as subprocesses in tests/integration/test_cli.py."""

from __future__ import annotations

import pytest

from taskfleet.backends.base import ResultRecord
from taskfleet.brokers.base import QueueDepth
from taskfleet.cli import call_command, dead_letters_command, purge_command, queues_command
from taskfleet.cli.console import CommandFailed
from taskfleet.message import Message
from taskfleet.serializers import JSON, PICKLE, get_serializer
from taskfleet.states import State


def _message(*args: object, **kwargs: object) -> bytes:
    return Message(id="t1", task="billing.charge", args=args, kwargs=kwargs).encode(get_serializer(JSON))


# -- queues and purge ----------------------------------------------------------------------------------------------

def test_a_count_the_broker_cannot_make_is_shown_as_a_question_mark_not_zero() -> None:
    depth = QueueDepth(ready=3, in_flight=0, delayed=0, dead=1, in_flight_known=False, delayed_known=False)

    assert queues_command.depth_row("emails", depth) == ("emails", "3", "?", "?", "1", "0")


def test_due_messages_get_the_last_column_so_the_others_keep_their_places() -> None:
    depth = QueueDepth(ready=0, in_flight=1, delayed=2, dead=3, due=4)

    assert queues_command.depth_row("emails", depth) == ("emails", "0", "1", "2", "3", "4")
    assert [c.header for c in queues_command.depth_table({"emails": depth}).columns] == [
        "QUEUE", "READY", "IN-FLIGHT", "DELAYED", "DEAD", "DUE"]


def test_queues_json_keeps_the_five_counts_and_adds_whether_they_are_known() -> None:
    depth = QueueDepth(ready=3, in_flight=2, delayed=0, dead=1, due=1, delayed_known=False)

    assert queues_command.depth_json(depth) == {"ready": 3, "in_flight": 2, "delayed": 0, "dead": 1, "due": 1,
                                                "in_flight_known": True, "delayed_known": False}


@pytest.mark.parametrize(("depth", "deletes"), [
    (QueueDepth(ready=1, in_flight=5, delayed=2), "Delete 1 ready message and 2 delayed messages of queue"),
    (QueueDepth(ready=1, in_flight=0, delayed=2, due=1), "Delete 1 ready message and 3 delayed messages of queue"),
    (QueueDepth(ready=0, in_flight=0, delayed_known=False),
     "Delete 0 ready messages and every delayed message (not counted) of queue"),
])
def test_purge_asks_with_the_counts_it_is_about_to_delete(depth: QueueDepth, deletes: str) -> None:
    assert purge_command.purge_question("emails", depth).startswith(deletes)


# -- call ----------------------------------------------------------------------------------------------------------

def test_call_json_always_has_the_same_four_keys() -> None:
    record = ResultRecord(task_id="t1", state=State.SUCCESS, result={"total": 3})

    assert call_command.report("t1", State.SUCCESS, record) == {"id": "t1", "state": "SUCCESS",
                                                               "result": {"total": 3}, "error": None}
    assert call_command.report("t1", State.PENDING) == {"id": "t1", "state": "PENDING", "result": None,
                                                       "error": None}


def test_call_json_of_a_failure_names_the_exception_as_a_person_writes_it() -> None:
    record = ResultRecord(task_id="t1", state=State.FAILURE, exc_type="builtins.ValueError", exc_message="bad",
                          traceback="Traceback ...")

    assert call_command.report("t1", State.FAILURE, record)["error"] == {
        "type": "ValueError", "message": "bad", "traceback": "Traceback ..."}


@pytest.mark.parametrize(("args_json", "kwargs_json", "complaint"), [
    ("[1,", "{}", "--args is not JSON"),
    ("{}", "{}", "--args must be a JSON list"),
    ("[]", "[1]", "--kwargs must be a JSON object"),
])
def test_call_arguments_that_are_not_a_json_list_and_object_are_refused(args_json: str, kwargs_json: str,
                                                                         complaint: str) -> None:
    with pytest.raises(CommandFailed, match=complaint):
        call_command.parse_arguments(args_json, kwargs_json)


# -- dead-letters --------------------------------------------------------------------------------------------------

def test_a_dead_letter_is_shown_as_the_call_it_was() -> None:
    assert dead_letters_command.task_preview(_message(42, "x", currency="EUR")) == (
        'billing.charge(42, "x", currency="EUR")')


def test_a_long_call_is_cut_to_the_preview_width() -> None:
    preview = dead_letters_command.task_preview(_message("a" * 200), width=30)

    assert len(preview) == 30
    assert preview.endswith("…)")


def test_bytes_that_are_not_a_message_are_shown_by_their_size() -> None:
    assert dead_letters_command.task_preview(b"\x00\x01junk") == "<undecodable: 6 bytes>"


def test_a_pickled_dead_letter_is_never_unpickled() -> None:
    pickled = Message(id="t1", task="evil").encode(get_serializer(PICKLE))

    assert dead_letters_command.task_preview(pickled) == (
        f"<{get_serializer(PICKLE).content_type}: {len(pickled)} bytes, not decoded>")
