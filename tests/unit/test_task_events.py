"""Task, worker and sent events: how each is built from what the executor, the heartbeat and the producer hand
over, that a child sends them in batches through its own store, that failures never reach a task, and that nothing
at all happens when events are off."""

from __future__ import annotations

import json
import multiprocessing
import signal as os_signal
from typing import Any

import pytest

from taskfleet import App
from taskfleet.brokers.base import Delivery
from taskfleet.errors import ConfigurationError
from taskfleet.fleet.event_sink import RETRY_AFTER_S, EventSink
from taskfleet.fleet.events import ARGS_REPR_MAX
from taskfleet.fleet.records import ChildState, WorkerRecord
from taskfleet.message import Message
from taskfleet.serializers import JSON, get_serializer
from taskfleet.worker.child import Child
from taskfleet.worker.executor import (
    ACK,
    ACK_NOW,
    DEAD_LETTERED,
    DROPPED,
    DUPLICATE,
    FAILURE,
    RETRY,
    REVOKED,
    SUCCESS,
    DeadLetter,
    Leave,
    Outcome,
    Started,
)
from taskfleet.worker.progress import RunningTask
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.task_events import (
    TaskEvents,
    end_event,
    received_event,
    received_json,
    shared_json,
    started_event,
    started_json,
    succeeded_json,
)
from taskfleet.worker.worker_events import WorkerEvents, worker_event
from tests import tasks
from tests.unit.fleet_fakes import RecordingStore

DELIVERY = Delivery("q", "t1", b"", 1)


def _message(**changes: Any) -> Message:
    fields: dict[str, Any] = {"id": "t1", "task": "tests.add", "args": (1, 2), "kwargs": {"k": "v"}, "queue": "q"}
    return Message(**{**fields, **changes})


def _encoded(message: Message) -> bytes:
    return Message.frame(get_serializer(JSON), None, message.encode_body(get_serializer(JSON)))


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


# -- building the events -------------------------------------------------------------------------------------------


def test_a_success_ends_in_task_succeeded_with_its_runtime_and_the_repr_of_its_result() -> None:
    outcome = Outcome(ACK, SUCCESS, "tests.add", 0.25, task_id="t1", result={"total": 3})

    event = end_event(DELIVERY, outcome, worker="host:1", timestamp=10.0)

    assert event is not None
    assert (event.type, event.timestamp) == ("task-succeeded", 10.0)
    assert dict(event.fields) == {"uuid": "t1", "name": "tests.add", "queue": "q", "worker": "host:1",
                                  "runtime": 0.25, "result": "{'total': 3}"}


def test_a_failure_ends_in_task_failed_with_the_exception_and_where_it_was_raised() -> None:
    outcome = Outcome(ACK, FAILURE, "tests.fail", 0.1, task_id="t1", error=_raised(ValueError("no way")))

    event = end_event(DELIVERY, outcome, worker="w", timestamp=1.0)

    assert event is not None
    assert event.type == "task-failed"
    assert event.fields["exception"] == "ValueError: no way"
    assert "_raised" in event.fields["traceback"]
    assert "ValueError: no way" in event.fields["traceback"]


def test_a_retry_ends_in_task_retried_with_its_exception() -> None:
    outcome = Outcome(ACK_NOW, RETRY, "tests.flaky", 0.1, task_id="t1", error=OSError("flaky"))

    event = end_event(DELIVERY, outcome, worker="w", timestamp=1.0)

    assert event is not None
    assert (event.type, event.fields["exception"]) == ("task-retried", "OSError: flaky")


def test_an_expired_task_ends_in_task_revoked_saying_it_expired() -> None:
    outcome = Outcome(ACK, REVOKED, "tests.add", 0.0, task_id="t1", detail="expired")

    event = end_event(DELIVERY, outcome, worker="w", timestamp=1.0)

    assert event is not None
    assert event.type == "task-revoked"
    assert (event.fields["reason"], event.fields["expired"], event.fields["terminated"]) == ("expired", True, False)


def test_a_dead_letter_ends_in_task_dead_lettered_with_its_reason_and_the_message_id_when_nothing_decoded() -> None:
    outcome = Outcome(DeadLetter("malformed message"), DEAD_LETTERED, "?", 0.0)

    event = end_event(DELIVERY, outcome, worker="w", timestamp=1.0)

    assert event is not None
    assert event.type == "task-dead-lettered"
    assert (event.fields["uuid"], event.fields["reason"]) == ("t1", "malformed message")


@pytest.mark.parametrize("outcome", [Outcome(ACK, DUPLICATE, "tests.add", 0.0, task_id="t1"),
                                     Outcome(Leave("broker down"), DROPPED, "?", 0.0)])
def test_a_duplicate_acked_unrun_or_a_message_left_for_redelivery_emits_no_end_event(outcome: Outcome) -> None:
    assert end_event(DELIVERY, outcome, worker="w", timestamp=1.0) is None


def test_task_received_carries_the_call_with_its_arguments_cut_to_a_bounded_repr() -> None:
    message = _message(args=("x" * 5000,), retries=2, eta=5.0, expires=9.0, parent_id="p1")

    event = received_event(message, queue="q", worker="w", timestamp=3.0)

    assert event.type == "task-received"
    assert len(event.fields["args"]) == ARGS_REPR_MAX
    assert event.fields["args"].endswith("...")
    assert {k: event.fields[k] for k in ("uuid", "name", "retries", "eta", "expires", "root_id", "parent_id")} == {
        "uuid": "t1", "name": "tests.add", "retries": 2, "eta": 5.0, "expires": 9.0, "root_id": "t1",
        "parent_id": "p1"}
    assert "eta" not in received_event(_message(), queue="q", worker="w", timestamp=3.0).fields, "None is left out"


@pytest.mark.parametrize("message", [
    _message(),
    _message(args=('quote " and \\ back\nslash', "ü", 1.5), kwargs={"k": None}, retries=3, eta=1.25,
             expires=99.5, root_id="r", parent_id="p"),
])
def test_the_hot_path_encodings_decode_to_exactly_what_the_builders_give(message: Message) -> None:
    shared = shared_json(message.id, message.task, "q", "höst:1")
    started = Started("m", "q", message.id, message.task, None, message)
    outcome = Outcome(ACK, SUCCESS, message.task, 0.125, task_id=message.id, result={"ok": [1, "two"]},
                      message=message)
    delivery = Delivery("q", "m", b"", 1)

    assert json.loads(received_json(message, shared=shared, timestamp=5.5)) == json.loads(
        received_event(message, queue="q", worker="höst:1", timestamp=5.5).to_json())
    assert json.loads(started_json(shared=shared, timestamp=5.5)) == json.loads(
        started_event(started, worker="höst:1", timestamp=5.5).to_json())
    built = end_event(delivery, outcome, worker="höst:1", timestamp=5.5)
    assert built is not None
    assert json.loads(succeeded_json(outcome, shared=shared, timestamp=5.5)) == json.loads(built.to_json())


def test_a_worker_event_carries_the_record_and_celerys_top_level_fields() -> None:
    record = WorkerRecord(id="host:7", app="tests", hostname="host", pid=7, queues=("q",), concurrency=2,
                          version="1", started_at=1.0, sent_at=2.0, processed=5,
                          children=(ChildState(0, 8, "t1", "tests.add", 1.5), ChildState(1, 9)))

    event = worker_event("worker-heartbeat", record)

    assert (event.type, event.timestamp) == ("worker-heartbeat", 2.0)
    assert {k: event.fields[k] for k in ("worker", "hostname", "pid", "active", "processed", "freq")} == {
        "worker": "host:7", "hostname": "host", "pid": 7, "active": 1, "processed": 5, "freq": 2.0}
    assert WorkerRecord.from_json(json.dumps(event.fields["record"]).encode()) == record


def test_worker_events_are_emitted_one_call_each_and_offline_closes_the_store() -> None:
    store = RecordingStore()
    events = WorkerEvents(EventSink(lambda: store))
    record = WorkerRecord(id="h:1", app="tests", hostname="h", pid=1, queues=("q",), concurrency=1, version="1",
                          started_at=1.0, sent_at=1.0)

    events.online(record)
    events.heartbeat(record)
    events.offline(record)

    assert store.types == ["worker-online", "worker-heartbeat", "worker-offline"]
    assert len(store.calls) == 3
    assert store.closed


# -- collecting and sending ----------------------------------------------------------------------------------------


def _collector(store: RecordingStore, **options: Any) -> TaskEvents:
    return TaskEvents(EventSink(lambda: store), worker="host:1", **options)


def test_what_a_child_collects_goes_out_in_one_call_per_flush_in_the_order_it_happened() -> None:
    store = RecordingStore()
    events = _collector(store)
    message = _message()
    delivery = Delivery("q", "t1", _encoded(message), 1)

    events.started(Started("t1", "q", "t1", "tests.add", None, message))
    events.finished(delivery, Outcome(ACK, SUCCESS, "tests.add", 0.01, task_id="t1", result=3, message=message))
    events.flush()

    assert len(store.calls) == 1
    assert store.types == ["task-received", "task-started", "task-succeeded"]
    assert {e.fields["uuid"] for e in store.events} == {"t1"}
    assert store.events[0].fields["args"] == "(1, 2)"


def test_a_task_that_never_started_is_received_just_before_its_end() -> None:
    store = RecordingStore()
    events = _collector(store)
    message = _message(expires=1.0)

    events.finished(DELIVERY, Outcome(ACK, REVOKED, "tests.add", 0.0, task_id="t1", detail="expired",
                                      message=message))
    events.flush()

    assert store.types == ["task-received", "task-revoked"]


def test_a_message_that_did_not_decode_has_its_end_event_alone() -> None:
    store = RecordingStore()
    events = _collector(store)

    events.finished(DELIVERY, Outcome(DeadLetter("malformed message"), DEAD_LETTERED, "?", 0.0))
    events.flush()

    assert store.types == ["task-dead-lettered"]


def test_a_flush_with_nothing_collected_makes_no_broker_call_and_opens_no_store() -> None:
    opened: list[RecordingStore] = []
    events = TaskEvents(EventSink(lambda: opened.append(RecordingStore()) or opened[-1]), worker="w")

    events.flush()

    assert opened == []


def test_events_kept_while_none_can_be_sent_are_bounded_the_oldest_dropped() -> None:
    store = RecordingStore()
    events = _collector(store, max_pending=2)

    for n in range(5):
        events.started(Started(f"m{n}", "q", f"t{n}", "tests.add", None))  # no message: no task-received
    events.flush()

    assert [e.fields["uuid"] for e in store.events] == ["t3", "t4"]
    assert events.sink.dropped == 3


def test_a_store_that_fails_drops_the_events_logs_once_and_is_tried_again_after_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RecordingStore(fail=True)
    now = [100.0]
    opened = []

    def open_store() -> RecordingStore:
        opened.append(store)
        return store

    sink = EventSink(open_store, clock=lambda: now[0])

    assert sink.emit([b"{}"]) is False
    assert sink.emit([b"{}", b"{}"]) is False  # within the interval: not tried, dropped
    store.fail = False
    now[0] += RETRY_AFTER_S
    assert sink.emit([b"{}"]) is True

    assert (len(opened), sink.dropped, sink.emitted) == (2, 3, 1)
    warnings = [r for r in caplog.records if "could not emit events" in r.getMessage()]
    assert len(warnings) == 1
    assert "BrokerConnectionError" in warnings[0].getMessage()


def test_a_store_that_cannot_be_opened_costs_the_events_never_an_exception() -> None:
    def refuse() -> RecordingStore:
        raise OSError("connection refused")

    sink = EventSink(refuse)

    assert sink.emit([b"{}"]) is False
    assert sink.dropped == 1


# -- in a worker child ---------------------------------------------------------------------------------------------


@pytest.fixture
def opened_stores(monkeypatch: pytest.MonkeyPatch) -> list[RecordingStore]:
    """Every fleet store the task events of a child open (none, when events are off)."""
    stores: list[RecordingStore] = []

    def connect(broker: object, *, namespace: str, events_max_len: int) -> RecordingStore:
        stores.append(RecordingStore())
        return stores[-1]

    monkeypatch.setattr("taskfleet.worker.task_events.connect_fleet_store", connect)
    return stores


def _run_child(app: App, *, events: bool, tasks_to_run: int) -> None:
    _ours, theirs = multiprocessing.Pipe(duplex=True)
    settings = WorkerSettings(queues=("tests",), prefetch=4, max_tasks_per_child=tasks_to_run, poll_timeout_s=0.1,
                              send_task_events=events)
    previous = os_signal.getsignal(os_signal.SIGTERM), os_signal.getsignal(os_signal.SIGINT)
    try:
        assert Child(app, settings, theirs, 0).run() == "max_tasks"
    finally:
        os_signal.signal(os_signal.SIGTERM, previous[0])
        os_signal.signal(os_signal.SIGINT, previous[1])


@pytest.fixture
def app(memory_app: App) -> App:
    return memory_app


def test_a_child_with_events_emits_received_started_and_the_end_of_each_task(
    app: App, opened_stores: list[RecordingStore]
) -> None:
    ok = tasks.add.delay(2, 3)
    bad = tasks.fail.delay("boom")

    _run_child(app, events=True, tasks_to_run=2)

    (store,) = opened_stores
    by_task = {(e.fields["uuid"], e.type) for e in store.events}
    assert {(ok.id, "task-received"), (ok.id, "task-started"), (ok.id, "task-succeeded"),
            (bad.id, "task-received"), (bad.id, "task-started"), (bad.id, "task-failed")} <= by_task
    assert store.closed
    assert len(store.calls) <= 3, "batched: a call per background tick at most, not one per event"


def test_a_child_without_events_opens_no_store_and_builds_no_event(
    app: App, opened_stores: list[RecordingStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("no event may be built when events are off")

    monkeypatch.setattr("taskfleet.worker.task_events.end_event", never)
    monkeypatch.setattr("taskfleet.worker.task_events.started_event", never)
    tasks.add.delay(2, 3)

    _run_child(app, events=False, tasks_to_run=1)

    assert opened_stores == []


# -- task-sent from publishers --------------------------------------------------------------------------------------


@pytest.fixture
def sent_stores(monkeypatch: pytest.MonkeyPatch) -> list[RecordingStore]:
    stores: list[RecordingStore] = []

    def connect(broker: object, *, namespace: str, events_max_len: int) -> RecordingStore:
        stores.append(RecordingStore())
        return stores[-1]

    monkeypatch.setattr("taskfleet.brokers.fleet_store.connect_fleet_store", connect)
    return stores


def test_with_task_send_sent_event_every_publish_emits_task_sent_and_send_many_one_call_per_chunk(
    app: App, sent_stores: list[RecordingStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskfleet.producer.SEND_MANY_CHUNK", 3)
    app.configure(task_send_sent_event=True)
    try:
        one = tasks.add.delay(1, 1)
        many = app.send_many(tasks.add.s(i, 0) for i in range(7))
    finally:
        app.configure(task_send_sent_event=False)

    (store,) = sent_stores
    assert [len(call) for call in store.calls] == [1, 3, 3, 1]
    assert [e.fields["uuid"] for e in store.events] == [one.id, *(r.id for r in many)]
    assert set(store.types) == {"task-sent"}
    assert store.events[0].fields["args"] == "(1, 1)"
    assert store.closed, "app.configure closed the store with the app's connections"


def test_without_task_send_sent_event_publishing_opens_no_store(
    app: App, sent_stores: list[RecordingStore]
) -> None:
    tasks.add.delay(1, 1)
    app.send_many(tasks.add.s(i, 0) for i in range(3))

    assert sent_stores == []


# -- settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "on"), [("1", True), ("true", True), ("Yes", True), ("0", False),
                                          ("false", False), ("", False)])
def test_the_events_switches_read_from_configuration_text_are_switches(text: str, on: bool) -> None:
    app = App("cfg")

    app.config_from_object({"TASKFLEET_WORKER_SEND_TASK_EVENTS": text, "TASKFLEET_TASK_SEND_SENT_EVENT": text,
                            "TASKFLEET_EVENTS_MAX_LEN": "500"})

    assert (app.settings.worker_send_task_events, app.settings.task_send_sent_event) == (on, on)
    assert app.settings.events_max_len == 500


def test_an_events_switch_that_is_not_one_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="TASKFLEET_WORKER_SEND_TASK_EVENTS"):
        App("cfg").config_from_object({"TASKFLEET_WORKER_SEND_TASK_EVENTS": "maybe"})


def test_an_event_stream_cap_below_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="events_max_len"):
        App("cfg", events_max_len=0)


@pytest.mark.parametrize(("terminated", "types", "detail"), [
    (True, ["task-received", "task-started", "task-revoked"], {"reason": "terminated", "terminated": True}),
    (False, ["task-received", "task-started", "task-failed"],
     {"exception": "TimeLimitExceeded: tests.add exceeded its time limit; its child was killed"}),
])
def test_a_task_killed_by_the_supervisor_ends_in_its_event_sent_at_once(
        terminated: bool, types: list[str], detail: dict[str, Any]) -> None:
    # Given a task that started, and then is terminated by a revoke or killed past its hard time limit
    store = RecordingStore()
    events = _collector(store)
    message = _message()
    delivery = Delivery("q", "t1", _encoded(message), 1)
    events.started(Started("t1", "q", "t1", "tests.add", None, message))

    events.killed(delivery, RunningTask(seq=1, task_id="t1", task="tests.add", since=0.0), terminated=terminated)

    # Then its end event is out already, with no flush waited for: the child dies next
    assert store.types == types
    end = store.events[-1].fields
    assert {key: end[key] for key in detail} == detail
