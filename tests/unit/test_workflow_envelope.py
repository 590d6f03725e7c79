"""Specification of the workflow data a message carries (envelope field ``workflow``, taskfleet.canvas.workflow): how
it is written, that plain messages do not carry it, how it is read back, and what is malformed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskfleet import App, DecodeError, Message
from taskfleet.canvas import chain, chord
from taskfleet.canvas.freezing import freeze
from taskfleet.canvas.planner import Planner
from taskfleet.canvas.workflow import Continuation, Join, Workflow
from taskfleet.serializers import get_serializer

app = App("wf", default_queue="wf")
JSON = get_serializer("json")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


def _wire(message: Message) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(message.encode(JSON).partition(b"\n")[2])
    return envelope


def _decoded(message: Message) -> Message:
    return Message.decode(message.encode(JSON), accept=frozenset({"json"}))


def test_a_plain_message_has_no_workflow_field_on_the_wire() -> None:
    [message] = Planner(app).messages(freeze(add.s(1, 2), app))
    assert message.workflow is None
    assert "workflow" not in _wire(message)
    assert "workflow" not in _wire(Message(id="x", task="t"))


def test_a_chains_first_message_carries_the_rest_of_the_chain_with_every_task_id() -> None:
    frozen = freeze(chain(add.s(1, 1), add.s(2), add.s(3)), app)
    [message] = Planner(app).messages(frozen)

    workflow = _wire(message)["workflow"]
    assert [step["task"] for step in workflow["chain"]] == ["wf.add", "wf.add"]
    assert all(step["task_id"] for step in workflow["chain"])
    assert set(workflow) == {"chain"}


def test_each_header_message_reports_to_the_chords_join_by_index() -> None:
    frozen = freeze(chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)], tsum.s()), app)
    messages = Planner(app).messages(frozen)

    joins = [_wire(m)["workflow"]["chord"] for m in messages]
    assert [j["index"] for j in joins] == [0, 1, 2]
    assert {j["size"] for j in joins} == {3}
    assert len({j["id"] for j in joins}) == 1
    assert {j["body"]["task"] for j in joins} == {"wf.tsum"}
    assert {_wire(m)["workflow"]["group"] for m in messages} == {joins[0]["id"]}


def test_workflow_data_reads_back_as_it_was_written() -> None:
    frozen = freeze(chain(add.s(1, 1).link(add.s(5)).link_error(tsum.si([0])), chord([add.s(2), add.s(3)], tsum.s())),
                    app)
    [message] = Planner(app, follow_up=True, parent=Message(id="parent", task="wf.add")).messages(frozen)

    back = _decoded(message)
    workflow = Workflow.from_dict(back.workflow, app)
    assert workflow.to_dict() == message.workflow
    assert workflow.follow_up
    assert (back.parent_id, back.root_id) == ("parent", "parent")


def test_a_chord_in_a_chords_header_nests_the_outer_join_in_the_inner_one() -> None:
    inner = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    frozen = freeze(chord([inner, add.s(3, 3)], tsum.s()), app)
    messages = Planner(app).messages(frozen)

    first = Workflow.from_dict(messages[0].workflow, app)
    assert first.then.join is not None
    outer = first.then.join.then.join
    assert outer is not None
    assert (outer.index, outer.size) == (0, 2)
    last = Workflow.from_dict(messages[-1].workflow, app).then.join
    assert last is not None
    assert (last.id, last.index) == (outer.id, 1)


def _valid_join() -> dict[str, Any]:
    body = freeze(tsum.s(), app)
    return Join("c1", 0, 2, body, Continuation()).to_dict()


@pytest.mark.parametrize(
    ("workflow", "reason"),
    [
        pytest.param([1, 2], "not a mapping", id="not-a-mapping"),
        pytest.param({"colour": "red"}, "unknown workflow keys", id="unknown-key"),
        pytest.param({"chain": {"task": "x"}}, "'chain' must be a list", id="chain-not-a-list"),
        pytest.param({"link": [{"task": "wf.add"}]}, "without a task_id", id="callback-not-frozen"),
        pytest.param({"link": [{"args": []}]}, "link", id="callback-without-task"),
        pytest.param({"chord": "c1"}, "'chord' must be a mapping", id="chord-not-a-mapping"),
        pytest.param({"chord": {**_valid_join(), "index": 2}}, "index 2", id="index-out-of-range"),
        pytest.param({"chord": {**_valid_join(), "size": True}}, "size", id="size-not-an-int"),
        pytest.param({"chord": {**_valid_join(), "id": ""}}, "'id'", id="empty-chord-id"),
        pytest.param({"chord": {k: v for k, v in _valid_join().items() if k != "body"}}, "chord body",
                     id="no-body"),
        pytest.param({"group": 7}, "'group'", id="group-not-a-string"),
        pytest.param({"follow_up": "yes"}, "'follow_up'", id="follow-up-not-a-bool"),
    ],
)
def test_malformed_workflow_data_is_a_decode_error_with_a_reason(workflow: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as caught:
        Workflow.from_dict(workflow, app)
    assert str(caught.value).startswith("malformed workflow")


def test_a_workflow_field_of_the_wrong_type_is_a_malformed_message() -> None:
    data = b'application/json\n{"v":1,"id":"x","task":"t","queue":"q","workflow":[1]}'
    with pytest.raises(DecodeError, match="'workflow' must be dict"):
        Message.decode(data, accept=frozenset({"json"}))


def test_a_worker_decodes_only_the_next_step_of_a_long_chain_and_passes_the_rest_on_as_it_came() -> None:
    frozen = freeze(chain(add.s(0, 0), *(add.s(1) for _ in range(50))), app)
    [message] = Planner(app).messages(frozen)
    wire_rest = _wire(message)["workflow"]["chain"]
    wire_rest[30] = {"task": "wf.add", "task_id": 42}  # malformed, far down the chain

    workflow = Workflow.from_dict({"chain": wire_rest}, app)  # only the next step is read now
    later = Continuation(workflow.then.rest[1:])

    assert workflow.then.rest[0].to_dict() == wire_rest[0]
    assert later.to_dict()["chain"] == wire_rest[1:]  # written back unread, the malformed step included
    with pytest.raises(DecodeError, match="malformed workflow: chain"):
        Workflow.from_dict(later.to_dict() | {"chain": wire_rest[30:]}, app)  # the step before it finds it
