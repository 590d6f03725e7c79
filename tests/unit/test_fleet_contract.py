"""Specification of the fleet's plain data (taskfleet.fleet): worker records, control requests and replies,
revocations and events, and how each refuses bytes that are not one."""

from __future__ import annotations

import json
import signal

import pytest

from taskfleet.errors import ControlError, DecodeError
from taskfleet.fleet.events import ARGS_REPR_MAX, FleetEvent, short_repr
from taskfleet.fleet.protocol import ControlReply, ControlRequest, canonical_command, replies_by_worker
from taskfleet.fleet.records import ChildState, PodInfo, WorkerRecord, pod_from_env, worker_id
from taskfleet.fleet.revocations import Revocation, signal_number


def record(**changes: object) -> WorkerRecord:
    fields: dict[str, object] = {
        "id": "host-a:42", "app": "billing", "hostname": "host-a", "pid": 42, "queues": ("default", "mail"),
        "concurrency": 2, "version": "0.1.0", "started_at": 100.0, "sent_at": 130.0, "processed": 7, "failed": 1,
        "children": (ChildState(0, 43, "t-1", "billing.charge", 120.0), ChildState(1, 44)),
        "pod": PodInfo("worker-abc", "shop", "uid-1"),
    }
    fields.update(changes)
    return WorkerRecord(**fields)  # type: ignore[arg-type]


def test_a_worker_record_survives_its_json_and_counts_its_busy_children() -> None:
    original = record()
    decoded = WorkerRecord.from_json(original.to_json())
    assert decoded == original
    assert decoded.busy == 1


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"v": 99}', b'{"v": 1, "id": "x"}',
                                 b'{"v": 1, "id": "x", "app": "a", "hostname": "h", "pid": "nan?", "queues": [],'
                                 b' "concurrency": 1, "version": "1", "started_at": 1, "sent_at": 1}'])
def test_a_malformed_worker_record_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        WorkerRecord.from_json(raw)


def test_the_worker_id_is_hostname_and_pid() -> None:
    assert worker_id("pod-1", 7) == "pod-1:7"


def test_the_pod_comes_from_the_downward_api_variables_only_when_all_are_set() -> None:
    env = {"TASKFLEET_POD_NAME": "w-1", "TASKFLEET_POD_NAMESPACE": "shop", "TASKFLEET_POD_UID": "u"}
    assert pod_from_env(env) == PodInfo("w-1", "shop", "u")
    assert pod_from_env({"TASKFLEET_POD_NAME": "w-1"}) is None


@pytest.mark.parametrize(("spelling", "command"), [("rate-limit", "rate_limit"), ("rate_limit", "rate_limit"),
                                                   ("Add-Consumer", "add_consumer"), ("ping", "ping")])
def test_celery_and_cli_spellings_name_one_command(spelling: str, command: str) -> None:
    assert canonical_command(spelling) == command


def test_an_unknown_command_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ControlError, match=r"known: .*rate_limit"):
        canonical_command("reboot")


def test_a_control_request_survives_its_json_and_knows_whom_it_addresses() -> None:
    request = ControlRequest("rate-limit", {"task_name": "t", "rate_limit": "1/s"}, ("w:1",), reply_to="inbox")
    decoded = ControlRequest.from_json(request.to_json())
    assert decoded == request
    assert decoded.command == "rate_limit"
    assert decoded.addressed_to("w:1")
    assert not decoded.addressed_to("w:2")
    assert ControlRequest("ping").addressed_to("anyone")


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"garbage", b"[1]", b'{"v": 2}', b'{"v": 1}',
                                 b'{"v": 1, "id": "i", "command": "ping", "sent_at": 1, "arguments": []}',
                                 b'{"v": 1, "id": "i", "command": "ping", "sent_at": 1, "destination": "w"}',
                                 b'{"v": 1, "id": "i", "command": "explode", "sent_at": 1}',
                                 b'{"v": 1, "id": "i", "command": "ping", "sent_at": "soon"}'])
def test_a_control_message_that_does_not_parse_is_a_control_error(raw: bytes) -> None:
    with pytest.raises(ControlError):
        ControlRequest.from_json(raw)


def test_replies_read_as_celery_shapes_them_with_refusals_as_errors() -> None:
    replies = [ControlReply("r", "w:1", True, {"ok": "pong"}), ControlReply("r", "w:2", False, error="bad task")]
    decoded = [ControlReply.from_json(r.to_json()) for r in replies]
    assert replies_by_worker(decoded) == {"w:1": {"ok": "pong"}, "w:2": {"error": "bad task"}}
    with pytest.raises(ControlError):
        ControlReply.from_json(b'{"v": 1}')


@pytest.mark.parametrize(("name", "number"), [("SIGTERM", signal.SIGTERM), ("term", signal.SIGTERM),
                                              ("KILL", signal.SIGKILL), ("9", 9), (15, 15)])
def test_signals_are_named_as_celery_names_them(name: str | int, number: int) -> None:
    assert signal_number(name) == number


@pytest.mark.parametrize("name", ["SIGNOPE", "0x", "999"])
def test_a_name_that_is_no_signal_is_a_control_error(name: str) -> None:
    with pytest.raises(ControlError):
        signal_number(name)


def test_a_revocation_survives_its_json_and_a_malformed_one_is_a_decode_error() -> None:
    revocation = Revocation("t-1", 1234.5, terminate=True, signal="SIGKILL")
    assert Revocation.from_json(revocation.to_json()) == revocation
    with pytest.raises(DecodeError):
        Revocation.from_json(b"{}")


def test_an_event_survives_its_json_with_its_fields_flat_as_in_celery() -> None:
    event = FleetEvent("task-succeeded", 10.0, {"uuid": "t-1", "name": "n", "runtime": 0.5})
    raw = event.to_json()
    assert json.loads(raw) == {"type": "task-succeeded", "timestamp": 10.0, "uuid": "t-1", "name": "n",
                               "runtime": 0.5}
    assert FleetEvent.from_json(raw) == event


def test_unknown_event_types_and_malformed_events_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        FleetEvent("task-exploded")
    with pytest.raises(DecodeError):
        FleetEvent.from_json(b'{"timestamp": 1}')


def test_event_arguments_are_cut_so_an_event_is_never_huge() -> None:
    text = short_repr("x" * 10_000)
    assert len(text) == ARGS_REPR_MAX
    assert text.endswith("...")
    assert short_repr((1, 2)) == "(1, 2)"
