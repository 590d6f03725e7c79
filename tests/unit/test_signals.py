"""Specification of the signals (taskfleet.signals): what the worker child, the executor and the producer send,
with Celery's names and arguments, and that a receiver that raises changes nothing but a log line."""

from __future__ import annotations

import multiprocessing
import os
import signal as os_signal
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from blinker import NamedSignal

from taskfleet import App, Message, Retry, State, signals
from taskfleet.backends.base import ResultRecord
from taskfleet.errors import ResultError
from taskfleet.hooks import ExceptionInfo
from taskfleet.task import Request
from taskfleet.worker.child import Child
from taskfleet.worker.executor import ACK, ACK_NOW, Leave
from taskfleet.worker.settings import WorkerSettings
from tests import hook_tasks, tasks
from tests.support.executing import in_memory, run_next

Call = tuple[Any, dict[str, Any]]


@pytest.fixture
def app() -> Iterator[App]:
    with in_memory(tasks.app) as configured:
        yield configured


@pytest.fixture
def receive() -> Iterator[Callable[..., list[Call]]]:
    """``receive(signal, sender=ANY)``: connect a receiver for the test; returns the list of ``(sender, named)`` it
    was called with."""
    connected: list[tuple[NamedSignal, Callable[..., None]]] = []

    def connect(signal: NamedSignal, **options: Any) -> list[Call]:
        calls: list[Call] = []

        def receiver(sender: Any = None, **named: Any) -> None:
            calls.append((sender, named))

        signal.connect(receiver, weak=False, **options)
        connected.append((signal, receiver))
        return calls

    yield connect
    for signal, receiver in connected:
        signal.disconnect(receiver)


def _raise(sender: Any = None, **named: Any) -> None:
    raise RuntimeError("receiver is broken")


# -- around a task run ---------------------------------------------------------------------------------------------


def test_a_success_sends_prerun_success_and_postrun_with_celerys_arguments(
    app: App, receive: Callable[..., list[Call]]
) -> None:
    prerun, success, postrun = receive(signals.task_prerun), receive(signals.task_success), receive(
        signals.task_postrun)
    result = tasks.add.delay(2, 3)

    run_next(app)

    assert [sender for sender, _ in prerun + success + postrun] == [tasks.add] * 3
    [(_, before)], [(_, done)], [(_, after)] = prerun, success, postrun
    assert before == {"signal": signals.task_prerun, "task_id": result.id, "task": tasks.add, "args": (2, 3),
                      "kwargs": {}}
    assert done == {"signal": signals.task_success, "result": 5}
    assert after == {"signal": signals.task_postrun, "task_id": result.id, "task": tasks.add, "args": (2, 3),
                     "kwargs": {}, "retval": 5, "state": State.SUCCESS}


def test_a_failure_sends_task_failure_with_the_exception_traceback_and_einfo(
    app: App, receive: Callable[..., list[Call]]
) -> None:
    failure, postrun = receive(signals.task_failure), receive(signals.task_postrun)
    result = tasks.fail.delay("bad input")

    run_next(app)

    [(sender, named)] = failure
    assert sender is tasks.fail
    assert (named["task_id"], named["args"], named["kwargs"]) == (result.id, ("bad input",), {})
    assert isinstance(named["exception"], ValueError)
    assert isinstance(named["traceback"], types.TracebackType)
    assert isinstance(named["einfo"], ExceptionInfo)
    assert named["einfo"].exception is named["exception"]
    assert named["einfo"].traceback == result.traceback, "the traceback as stored"
    [(_, after)] = postrun
    assert (after["state"], after["retval"]) == (State.FAILURE, named["exception"])


def test_a_retry_sends_task_retry_with_the_request_and_the_retry_reason(
    app: App, receive: Callable[..., list[Call]], marker: str
) -> None:
    retry, postrun = receive(signals.task_retry), receive(signals.task_postrun)
    result = tasks.flaky.delay(marker, 1)

    run_next(app)

    [(sender, named)] = retry
    assert sender is tasks.flaky
    assert isinstance(named["request"], Request)
    assert (named["request"].id, named["request"].retries) == (result.id, 0)
    assert isinstance(named["reason"], Retry)
    assert isinstance(named["reason"].exc, OSError)
    assert named["einfo"].exception is named["reason"].exc
    assert [after["state"] for _, after in postrun] == [State.RETRY]


def test_a_receiver_connected_to_one_task_hears_only_that_task(app: App, receive: Callable[..., list[Call]]) -> None:
    only_add = receive(signals.task_success, sender=tasks.add)
    tasks.pid.delay()
    tasks.add.delay(1, 1)

    run_next(app)
    run_next(app)

    assert [named["result"] for _, named in only_add] == [2]


def test_postrun_is_sent_with_no_state_when_the_outcome_could_not_be_stored(
    app: App, receive: Callable[..., list[Call]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(record: ResultRecord) -> None:
        raise ResultError("backend down")

    prerun, success, postrun = receive(signals.task_prerun), receive(signals.task_success), receive(
        signals.task_postrun)
    assert app.backend is not None
    monkeypatch.setattr(app.backend, "store", down)
    tasks.add.delay(1, 1)

    outcome = run_next(app)

    assert outcome.decision == Leave("backend down")
    assert (len(prerun), success) == (1, [])
    assert [(named["state"], named["retval"]) for _, named in postrun] == [(None, None)]


@pytest.mark.parametrize("signal", [signals.task_prerun, signals.task_success, signals.task_postrun])
def test_a_receiver_that_raises_is_logged_and_the_others_still_run_and_the_task_succeeds(
    app: App, receive: Callable[..., list[Call]], caplog: pytest.LogCaptureFixture, signal: NamedSignal
) -> None:
    signal.connect(_raise)
    try:
        others = receive(signal)
        result = tasks.add.delay(1, 2)

        outcome = run_next(app)
    finally:
        signal.disconnect(_raise)

    assert (outcome.outcome, outcome.decision) == ("success", ACK)
    assert result.get(timeout=1) == 3
    assert len(others) == 1
    [logged] = [r for r in caplog.records if r.name == "taskfleet.signals"]
    assert f"signal {signal.name} raised (task_id={result.id})" in logged.getMessage()
    assert logged.exc_info is not None


def test_a_retry_receiver_that_raises_does_not_stop_the_retry(app: App, marker: str) -> None:
    tasks.flaky.delay(marker, 1)
    signals.task_retry.connect(_raise)
    try:
        outcome = run_next(app)
    finally:
        signals.task_retry.disconnect(_raise)

    assert outcome.decision == ACK_NOW
    assert app.broker.queue_depth("tests").delayed == 1, "the next attempt is published"


def test_the_hook_runs_before_the_signal_of_the_same_outcome_and_both_see_the_running_request(
    app: App, marker: str
) -> None:
    seen: list[tuple[list[str], str | None]] = []

    def on_success(sender: Any = None, **named: Any) -> None:
        seen.append((tasks.lines(marker), sender.request.id))

    signals.task_success.connect(on_success)
    try:
        result = hook_tasks.hooked_add.delay(marker, 1, 1)
        run_next(app)
    finally:
        signals.task_success.disconnect(on_success)

    assert seen == [([f"before_start {result.id}", "body", "on_success 2"], result.id)]


# -- around a publish ----------------------------------------------------------------------------------------------


def test_delay_sends_before_and_after_publish_with_the_message(app: App, receive: Callable[..., list[Call]]) -> None:
    depth_when_after: list[int] = []
    before, after = receive(signals.before_task_publish), receive(signals.after_task_publish)
    signals.after_task_publish.connect(
        counted := lambda sender=None, **named: depth_when_after.append(app.broker.queue_depth("tests").ready),
        weak=False)
    try:
        result = tasks.add.apply_async((1, 2), headers={"tenant": "acme"})
    finally:
        signals.after_task_publish.disconnect(counted)

    [(sender, named)] = before
    assert sender == "tests.add"
    assert (named["routing_key"], named["exchange"], named["headers"]) == ("tests", "", {"tenant": "acme"})
    assert (named["body"]["id"], named["body"]["args"], named["body"]["task"]) == (result.id, [1, 2], "tests.add")
    assert [sender for sender, _ in after] == ["tests.add"]
    assert depth_when_after == [1], "after the broker stored it"


def test_a_before_publish_receiver_may_add_headers_and_the_message_carries_them(app: App) -> None:
    def inject(sender: Any = None, headers: dict[str, Any] | None = None, **named: Any) -> None:
        assert headers is not None
        headers["traceparent"] = "00-abc-def-01"

    signals.before_task_publish.connect(inject)
    try:
        tasks.add.apply_async((1, 2), headers={"tenant": "acme"})
    finally:
        signals.before_task_publish.disconnect(inject)

    [delivery] = app.broker.fetch(["tests"], max_messages=1, timeout_s=0)
    message = Message.decode(delivery.data, accept=app.settings.accept_content)
    assert message.headers == {"tenant": "acme", "traceparent": "00-abc-def-01"}


def test_a_publish_receiver_that_raises_does_not_stop_the_publish(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    signals.before_task_publish.connect(_raise)
    signals.after_task_publish.connect(_raise)
    try:
        tasks.add.delay(1, 2)
    finally:
        signals.before_task_publish.disconnect(_raise)
        signals.after_task_publish.disconnect(_raise)

    assert app.broker.queue_depth("tests").ready == 1
    assert len([r for r in caplog.records if r.name == "taskfleet.signals"]) == 2


def test_a_retry_publish_is_announced_too(app: App, receive: Callable[..., list[Call]], marker: str) -> None:
    tasks.flaky.delay(marker, 1)
    before = receive(signals.before_task_publish)

    run_next(app)

    [(sender, named)] = before
    assert (sender, named["body"]["retries"]) == ("tests.flaky", 1)


def test_send_many_announces_every_message_on_the_calling_thread_in_order(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskfleet.producer.SEND_MANY_CHUNK", 3)  # several chunks: pipelined without receivers
    seen: list[tuple[str, int, str]] = []

    def before(sender: Any = None, body: dict[str, Any] | None = None, **named: Any) -> None:
        assert body is not None
        seen.append(("before", body["args"][0], threading.current_thread().name))

    def after(sender: Any = None, body: dict[str, Any] | None = None, **named: Any) -> None:
        assert body is not None
        seen.append(("after", body["args"][0], threading.current_thread().name))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        app.send_many(tasks.add.s(i, 0) for i in range(7))
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)

    here = threading.current_thread().name
    assert [(kind, i) for kind, i, _ in seen] == [
        *(("before", i) for i in range(3)), *(("after", i) for i in range(3)),
        *(("before", i) for i in range(3, 6)), *(("after", i) for i in range(3, 6)), ("before", 6), ("after", 6)]
    assert {thread for _, _, thread in seen} == {here}


def test_without_receivers_nothing_is_built_for_the_publish_signals(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(message: Message) -> Message:
        raise AssertionError("announced with no receiver connected")

    monkeypatch.setattr("taskfleet.producer.announce_publish", never)
    monkeypatch.setattr("taskfleet.producer.announce_published", never)
    monkeypatch.setattr("taskfleet.producer.SEND_MANY_CHUNK", 3)

    tasks.add.delay(1, 1)
    app.send_many(tasks.add.s(i, 0) for i in range(7))

    assert app.broker.queue_depth("tests").ready == 8


# -- in a worker child ---------------------------------------------------------------------------------------------


def test_a_child_sends_process_init_before_it_is_ready_and_shutdown_when_it_exits_normally(
    app: App, receive: Callable[..., list[Call]]
) -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    reported_before_init: list[bool] = []
    shutdown = receive(signals.worker_process_shutdown)

    def on_init(sender: Any = None, **named: Any) -> None:
        reported_before_init.append(ours.poll(0))

    signals.worker_process_init.connect(on_init)
    child = Child(app, WorkerSettings(queues=("tests",), prefetch=1), theirs, 0)
    child.stopping = True  # as after SIGTERM: the loop ends at once
    previous = os_signal.getsignal(os_signal.SIGTERM), os_signal.getsignal(os_signal.SIGINT)
    try:
        assert child.run() == "stopped"
    finally:
        signals.worker_process_init.disconnect(on_init)
        os_signal.signal(os_signal.SIGTERM, previous[0])
        os_signal.signal(os_signal.SIGINT, previous[1])

    assert reported_before_init == [False], "sent once, before the child reported Ready"
    assert shutdown == [(None, {"signal": signals.worker_process_shutdown, "pid": os.getpid(), "exitcode": 0})]
    sent = []
    while ours.poll(0.05):
        sent.append(type(ours.recv()).__name__)
    assert sent[0] == "Ready"
    assert sent[-1] == "Exiting"
