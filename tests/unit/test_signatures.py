"""Specification of signatures and their composition (taskfleet.signature, taskfleet.canvas): partial application,
immutability, options, plain data, repr and the ``|`` rules. Nothing is sent here."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from taskfleet import App, ConfigurationError, Signature, chain, chord, chunks, group
from taskfleet.canvas import Chain, Chord, Group, node_from_dict
from taskfleet.canvas.freezing import calls, freeze, task_ids
from taskfleet.canvas.primitives import Node

app = App("sig")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task(queue="sums", priority=4)
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


# -- partial application and immutability -------------------------------------------------------------------


def test_arguments_given_when_sent_go_in_front_of_the_signatures_own() -> None:
    assert add.s(2).merged((4,), None) == ((4, 2), {})


def test_keyword_arguments_given_when_sent_are_merged_and_win() -> None:
    sig = add.s(1, y=2)
    assert sig.merged((), {"y": 3, "z": 4}) == ((1,), {"y": 3, "z": 4})


def test_an_immutable_signature_ignores_the_arguments_it_is_sent_with() -> None:
    assert add.si(1, 2).merged((99,), {"y": 3}) == ((1, 2), {})
    assert add.s(1, 2).set(immutable=True).immutable


def test_clone_applies_partial_arguments_and_options_to_a_copy() -> None:
    sig = add.s(2)
    cloned = sig.clone((4,), queue="fast")
    assert (cloned.args, cloned.queue) == ((4, 2), "fast")
    assert (sig.args, sig.queue) == ((2,), None), "the original is unchanged"


def test_calling_a_signature_runs_the_task_here_with_partial_arguments() -> None:
    assert add.s(2)(40) == 42
    assert add.si(1, 1)(40) == 2


# -- options ---------------------------------------------------------------------------------------------------


def test_set_returns_a_new_signature_with_the_options() -> None:
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    sig = add.s(1, 1).set(queue="low", priority=7, expires=60, eta=eta, task_id="t-1", headers={"trace": "x"})
    assert (sig.queue, sig.priority, sig.expires, sig.eta, sig.task_id) == ("low", 7, 60, eta, "t-1")
    assert dict(sig.headers or {}) == {"trace": "x"}
    assert add.s(1, 1).queue is None


def test_countdown_replaces_an_eta_and_the_other_way_round() -> None:
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    assert add.s().set(eta=eta).set(countdown=5).eta is None
    assert add.s().set(countdown=5).set(eta=eta).countdown is None


def test_an_unknown_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="'routing_key'"):
        add.s().set(routing_key="x")
    with pytest.raises(TypeError, match="'exchange'"):
        add.s().apply_async(exchange="tasks")
    with pytest.raises(TypeError, match="'task_id'"):
        chain(add.s(1, 1), mul.s(2)).set(task_id="x")


def test_bad_option_values_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="priority"):
        add.s().set(priority=10)
    with pytest.raises(ConfigurationError, match="queue"):
        group(add.s()).set(queue="bad queue!")


def test_task_signature_and_app_signature_take_args_kwargs_and_options() -> None:
    assert add.signature((1,), {"y": 2}, queue="q") == Signature(task="sig.add", args=(1,), kwargs={"y": 2},
                                                                   queue="q")
    by_name = app.signature("billing.charge", args=(42,), countdown=3)
    assert (by_name.task, by_name.args, by_name.countdown, by_name.app) == ("billing.charge", (42,), 3, app)


def test_the_app_is_not_part_of_a_signatures_data() -> None:
    sig = add.s(1, 2)
    assert sig.app is app
    assert sig == Signature(task="sig.add", args=(1, 2))
    assert "app" not in sig.to_dict()
    assert "App" not in repr(sig)


def test_a_signature_without_an_app_cannot_be_sent() -> None:
    with pytest.raises(ConfigurationError, match="no app"):
        Signature(task="sig.add").delay()


def test_link_and_link_error_change_the_signature_in_place_as_in_celery() -> None:
    sig = add.s(1, 1)
    sig.link(mul.s(2))  # Celery's idiom: the return value is dropped, the callback must not be
    sig.link_error(tsum.s())

    assert (sig.callbacks, sig.errbacks) == ((mul.s(2),), (tsum.s(),))
    assert add.s(1, 1).link(mul.s(2)).link_error(tsum.s()) == sig, "each returns the signature, so links chain"
    assert add.s(1, 1).link(mul.s(2)).on_error(tsum.s()) == sig, "on_error is Celery's link_error that returns self"


# -- plain data ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "node",
    [
        pytest.param(add.s(1, y=2), id="task"),
        pytest.param(add.si(1, 2).set(queue="q", priority=3, expires=30, countdown=2, task_id="id-1",
                                      headers={"h": 1}), id="task-with-options"),
        pytest.param(add.s(1).set(eta=datetime(2030, 5, 1, 12, tzinfo=UTC), expires=datetime(2030, 5, 2, tzinfo=UTC)),
                     id="datetimes"),
        pytest.param(add.s(1).link(mul.s(2)).link_error(tsum.si([1])), id="links"),
        pytest.param(add.s(1, 1) | mul.s(2) | mul.s(3), id="chain"),
        pytest.param(group(add.s(i, i) for i in range(3)), id="group"),
        pytest.param(chord([add.s(1, 1), add.s(2, 2)], tsum.s()).set(queue="q"), id="chord"),
        pytest.param(add.chunks([(1, 2), (3, 4), (5, 6)], 2), id="chunks"),
        pytest.param(chain(add.s(1, 1), group(mul.s(2), mul.s(3)), tsum.s()), id="nested"),
        pytest.param(add.map([1, 2, 3]), id="map"),
    ],
)
def test_a_signature_round_trips_through_json_with_its_options_links_and_structure(node: Node) -> None:
    back = node_from_dict(json.loads(json.dumps(node.to_dict())), app=app)
    assert back == node
    assert type(back) is type(node)
    assert back.app is app


def test_reading_malformed_signature_data_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown signature fields"):
        node_from_dict({"task": "t", "colour": "red"})
    with pytest.raises(ConfigurationError, match="unknown signature kind"):
        node_from_dict({"kind": "pipeline", "tasks": []})
    with pytest.raises(ConfigurationError):
        node_from_dict({"kind": "chain", "tasks": "a, b"})
    with pytest.raises(ConfigurationError):
        node_from_dict(["t"])


def test_repr_reads_like_the_call() -> None:
    assert repr(add.s(2, 2)) == "sig.add(2, 2)"
    assert repr(add.s(2, y=3)) == "sig.add(2, y=3)"
    assert repr(add.s(2) | mul.s(3)) == "sig.add(2) | sig.mul(3)"
    assert repr(group(add.s(1, 1), add.s(2, 2))) == "group([sig.add(1, 1), sig.add(2, 2)])"
    assert repr(chord([add.s(1, 1)], tsum.s())) == "chord([sig.add(1, 1)], sig.tsum())"
    assert repr(add.map([1, 2])) == "[sig.add(x) for x in [1, 2]]"
    assert repr(add.starmap([(1, 2)])) == "[sig.add(*x) for x in [[1, 2]]]"


# -- composition (|) -------------------------------------------------------------------------------------------


def test_pipe_of_task_calls_makes_a_flat_chain() -> None:
    composed = add.s(1, 1) | mul.s(2) | (mul.s(3) | mul.s(4))
    assert isinstance(composed, Chain)
    assert composed.tasks == (add.s(1, 1), mul.s(2), mul.s(3), mul.s(4))
    assert chain(chain(add.s(1, 1), mul.s(2)), mul.s(3)).tasks == composed.tasks[:3]


def test_a_group_piped_into_a_task_is_a_chord() -> None:
    composed = group(add.s(1, 1), add.s(2, 2)) | tsum.s()
    assert composed == chord([add.s(1, 1), add.s(2, 2)], tsum.s())


def test_a_chain_ending_in_a_group_piped_into_a_task_ends_in_a_chord() -> None:
    composed = add.s(1, 1) | group(mul.s(2), mul.s(3)) | tsum.s()
    assert composed == chain(add.s(1, 1), chord([mul.s(2), mul.s(3)], tsum.s()))


def test_a_chord_piped_into_a_task_extends_its_body() -> None:
    composed = chord([add.s(1, 1)], tsum.s()) | mul.s(10)
    assert isinstance(composed, Chord)
    assert composed.body == chain(tsum.s(), mul.s(10))


def test_nested_groups_are_flattened() -> None:
    assert group(group(add.s(1, 1), add.s(2, 2)), add.s(3, 3)).tasks == (add.s(1, 1), add.s(2, 2), add.s(3, 3))


def test_piping_into_something_else_than_a_signature_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="signatures"):
        add.s() | 3  # type: ignore[operator]
    with pytest.raises(TypeError):
        group(add.s(), "not a signature")  # type: ignore[arg-type]


def test_a_chains_link_goes_to_its_last_step_and_link_error_to_every_step() -> None:
    linked = chain(add.s(1, 1), mul.s(2))
    linked.link(tsum.s())
    linked.link_error(tsum.si([0]))
    first, last = linked.tasks
    assert isinstance(first, Signature)
    assert isinstance(last, Signature)
    assert (first.callbacks, last.callbacks) == ((), (tsum.s(),))
    assert first.errbacks == last.errbacks == (tsum.si([0]),)


def test_a_chords_links_go_to_its_body_and_a_group_cannot_be_linked() -> None:
    linked = chord([add.s(1, 1)], tsum.s()).link(mul.s(2)).link_error(tsum.si([0]))
    assert linked.body == tsum.s().link(mul.s(2)).link_error(tsum.si([0]))
    with pytest.raises(TypeError, match="chord"):
        group(add.s(1, 1)).link(tsum.s())


def test_chunks_are_a_group_of_starmaps_over_n_items_each() -> None:
    made = chunks(add.s(), [(1, 2), (3, 4), (5, 6)], 2).group()
    assert isinstance(made, Group)
    assert [dict(t.kwargs)["it"] for t in made.tasks if isinstance(t, Signature)] == [[[1, 2], [3, 4]], [[5, 6]]]
    assert {t.task for t in made.tasks if isinstance(t, Signature)} == {"taskfleet.starmap"}


def test_map_runs_on_the_mapped_tasks_queue_and_ignores_a_parents_result() -> None:
    mapped = tsum.map([[1], [2]])
    assert (mapped.task, mapped.queue, mapped.immutable) == ("taskfleet.map", "sums", True)


# -- freezing --------------------------------------------------------------------------------------------------


def test_freezing_assigns_every_task_id_and_takes_routing_from_the_task() -> None:
    frozen = freeze(chain(add.s(1, 1), group(mul.s(2), tsum.s()), mul.s(3)).set(priority=2), app)
    ids = task_ids(frozen)
    assert len(ids) == len(set(ids)) == 4
    by_task = {call.task: call for call in calls(frozen)}
    assert by_task["sig.tsum"].queue == "sums", "its task's queue, known here"
    assert {call.priority for call in calls(frozen)} == {2}, "a composite's options override its tasks'"


def test_freezing_makes_a_group_followed_by_a_step_a_chord() -> None:
    frozen = freeze(chain(add.s(1, 1), group(mul.s(2), mul.s(3)), tsum.s(), mul.s(2)), app)
    assert isinstance(frozen, Chain)
    _first, upgraded = frozen.tasks
    assert isinstance(upgraded, Chord)
    assert isinstance(upgraded.body, Chain)
    assert [c.task for c in calls(upgraded.body)] == ["sig.tsum", "sig.mul"]


def test_a_composites_countdown_applies_to_the_tasks_it_sends_first_only() -> None:
    frozen = freeze(chain(add.s(1, 1), mul.s(2)).set(countdown=5), app)
    assert [c.countdown for c in calls(frozen)] == [5, None]


def test_a_nested_composites_options_stay_with_its_own_tasks() -> None:
    nested = chain(chain(add.s(1, 1), mul.s(2)).set(countdown=5, queue="q"), mul.s(3))
    assert [(t.countdown, t.queue) for t in nested.tasks if isinstance(t, Signature)] == [
        (5, "q"), (None, "q"), (None, None)], "a countdown applies to what the inner chain sends first"
    with_header_options = chord(group(add.s(1, 1), add.s(2, 2)).set(priority=8), tsum.s())
    assert {t.priority for t in with_header_options.header.tasks if isinstance(t, Signature)} == {8}
    assert node_from_dict(with_header_options.to_dict(), app=app) == with_header_options


def test_send_many_keeps_a_signatures_own_task_id_and_refuses_callbacks() -> None:
    sending = App("send", broker="memory://")
    [result] = sending.send_many([Signature(task="t", task_id="chosen")])
    assert result.id == "chosen"
    with pytest.raises(TypeError, match="group"):
        sending.send_many([Signature(task="t").link(Signature(task="cb"))])


def test_link_given_to_apply_async_goes_with_that_send_only_and_leaves_the_signature_as_it_was() -> None:
    sending = App("send-links", broker="memory://")
    step = sending.signature("t", args=(1,))
    flow = chain(sending.signature("t"), sending.signature("u"))

    step.apply_async(link=sending.signature("cb"), link_error=sending.signature("eb"))
    step.apply_async(link=sending.signature("cb"))
    flow.apply_async(link=sending.signature("cb"), link_error=sending.signature("eb"))

    assert (step.callbacks, step.errbacks) == ((), ())
    assert all((s.callbacks, s.errbacks) == ((), ()) for s in calls(flow))
    sent = sending.broker.fetch(["default"], max_messages=10, timeout_s=0.1)
    links = [json.loads(d.data.partition(b"\n")[2]).get("workflow", {}).get("link", []) for d in sent]
    assert [len(link) for link in links] == [1, 1, 0], "each send carries its own callback, once"
