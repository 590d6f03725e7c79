"""Specification of the worker's control server (taskfleet.worker.control_server): which received messages are
carried out, on the supervisor's loop, and what is answered; bad bytes, strangers' and stale requests, failing
handlers and a failing broker never stop the worker."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from taskfleet import App
from taskfleet.errors import ControlError
from taskfleet.fleet.protocol import INSPECT_COMMANDS, MAX_REQUEST_AGE_S, ControlReply, ControlRequest
from taskfleet.worker.control_server import EXCERPT_BYTES, ControlServer, Handler, handler_table
from taskfleet.worker.supervisor import Supervisor
from tests.support.fleet import FakeServer, fake_supervisor
from tests.support.waiting import wait_for

WORKER = "host-a:100"



def _events(stream: io.StringIO, level: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, stream.getvalue().splitlines()) if e["level"] == level]


def _raise(error: Exception) -> Handler:
    def handler(supervisor: Supervisor, arguments: Mapping[str, Any]) -> Any:
        raise error

    return handler


def _echo(supervisor: Supervisor, arguments: Mapping[str, Any]) -> Any:
    return {"echo": dict(arguments)}


HANDLERS: Mapping[str, Handler] = {
    "ping": lambda supervisor, arguments: {"ok": "pong"},
    "stats": _echo,
    "rate_limit": _raise(ControlError("rate limit '7/fortnight' is not a rate")),
    "active": _raise(RuntimeError("handler bug")),
}


class Harness:
    """A control server whose hand-overs to the supervisor's loop are kept until ``run_loop``."""

    def __init__(self, app: App, handlers: Mapping[str, Handler] = HANDLERS) -> None:
        self.server = FakeServer()
        self.supervisor = fake_supervisor(app)
        self.control = ControlServer(worker=WORKER, supervisor=self.supervisor, connect=self.server.connect,
                                     handlers=handlers)

    def request(self, command: str, **fields: Any) -> ControlRequest:
        fields.setdefault("reply_to", "inbox-1")
        return ControlRequest(command, **fields)

    def receive(self, request: ControlRequest | bytes) -> None:
        self.control.accept(request if isinstance(request, bytes) else request.to_json())

    def run_loop(self) -> None:
        self.supervisor._run_soon()

    def replies(self) -> list[ControlReply]:
        self.control._send_replies(self.server.connect())
        return [ControlReply.from_json(raw) for _, raw in self.server.replies]


@pytest.fixture
def harness(memory_app: App) -> Harness:
    return Harness(memory_app)


def test_a_request_is_carried_out_on_the_supervisors_loop_and_answered_to_its_reply_address(
        harness: Harness) -> None:
    request = harness.request("stats", arguments={"x": 1})

    harness.receive(request)
    assert harness.replies() == [], "nothing runs before the supervisor's loop takes it"
    harness.run_loop()

    assert harness.replies() == [ControlReply(request.id, WORKER, ok=True, result={"echo": {"x": 1}})]
    assert harness.server.replies[0][0] == "inbox-1"


def test_a_request_without_a_reply_address_is_carried_out_unanswered(harness: Harness) -> None:
    ran: list[str] = []
    harness.control.handlers = {"ping": lambda supervisor, arguments: ran.append("ping")}

    harness.receive(harness.request("ping", reply_to=None))
    harness.run_loop()

    assert ran == ["ping"]
    assert harness.replies() == []


@pytest.mark.parametrize(
    "destination",
    [pytest.param(None, id="every worker"), pytest.param((WORKER,), id="this worker"),
     pytest.param(("host-b:7", WORKER), id="this worker among others")],
)
def test_a_request_for_this_worker_is_answered(harness: Harness, destination: tuple[str, ...] | None) -> None:
    harness.receive(harness.request("ping", destination=destination))
    harness.run_loop()

    assert [r.result for r in harness.replies()] == [{"ok": "pong"}]


def test_a_request_for_other_workers_is_ignored(harness: Harness) -> None:
    harness.receive(harness.request("ping", destination=("host-b:7",)))
    harness.run_loop()

    assert harness.replies() == []


def test_a_request_older_than_the_maximum_age_is_ignored(harness: Harness, logs: io.StringIO) -> None:
    stale = harness.request("ping", sent_at=time.time() - MAX_REQUEST_AGE_S - 5)

    harness.receive(stale)
    harness.run_loop()

    assert harness.replies() == []
    assert [e["event"] for e in _events(logs, "info")] == ["control request ignored: too old"]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="not JSON"),
        pytest.param(b"\xff\xfe\x00garbage", id="not UTF-8"),
        pytest.param(b"[1, 2, 3]", id="not an object"),
        pytest.param(b'{"v": 99, "command": "ping"}', id="another protocol version"),
        pytest.param(b'{"v": 1, "command": "ping", "id": "x", "sent_at": "soon"}', id="a bad field"),
        pytest.param(b'{"v": 1, "command": "ping", "id": "x", "sent_at": 1, "destination": "w"}',
                     id="a destination that is not a list"),
    ],
)
def test_bytes_that_are_not_a_request_are_logged_and_dropped(harness: Harness, logs: io.StringIO,
                                                              raw: bytes) -> None:
    harness.receive(raw)
    harness.run_loop()

    assert harness.replies() == []
    [warning] = _events(logs, "warning")
    assert warning["event"] == "control message dropped: not a valid request"
    assert warning["size"] == len(raw)
    assert warning["excerpt"] == repr(raw)


def test_the_log_of_a_large_bad_message_holds_an_excerpt_not_the_payload(harness: Harness,
                                                                         logs: io.StringIO) -> None:
    raw = b"x" * 10_000

    harness.receive(raw)

    [warning] = _events(logs, "warning")
    assert len(warning["excerpt"]) < EXCERPT_BYTES + 10
    assert "x" * 1000 not in logs.getvalue()


def test_an_unknown_command_with_a_reply_address_is_refused_with_the_reason(harness: Harness) -> None:
    raw = json.dumps({"v": 1, "id": "r1", "command": "reboot", "arguments": {}, "destination": None,
                      "reply_to": "inbox-9", "sent_at": time.time()}).encode()

    harness.receive(raw)

    [reply] = harness.replies()
    assert (reply.request_id, reply.ok) == ("r1", False)
    assert "unknown control command 'reboot'" in str(reply.error)


def test_a_refused_change_answers_not_ok_with_its_reason(harness: Harness) -> None:
    harness.receive(harness.request("rate_limit", arguments={"task_name": "t", "rate_limit": "7/fortnight"}))
    harness.run_loop()

    [reply] = harness.replies()
    assert (reply.ok, reply.error) == (False, "rate limit '7/fortnight' is not a rate")


def test_a_known_command_without_a_handler_is_not_supported_by_this_worker(harness: Harness) -> None:
    harness.receive(harness.request("pool_grow", arguments={"n": 1}))
    harness.run_loop()

    [reply] = harness.replies()
    assert (reply.ok, reply.error) == (False, "'pool_grow' is not supported by this worker")


def test_a_handler_bug_is_answered_and_logged_and_the_supervisor_loop_goes_on(harness: Harness,
                                                                              logs: io.StringIO) -> None:
    # Given a handler that raises, and a request after it
    broken = harness.request("active")
    after = harness.request("ping")

    # When both are received and the supervisor's loop runs
    harness.receive(broken)
    harness.receive(after)
    harness.run_loop()

    # Then the bug is answered not-ok, logged with its traceback, and the next request is served
    first, second = harness.replies()
    assert (first.request_id, first.ok, first.error) == (broken.id, False, "RuntimeError: handler bug")
    assert (second.request_id, second.ok, second.result) == (after.id, True, {"ok": "pong"})
    [error] = _events(logs, "error")
    assert error["event"] == "control command failed"
    assert error["command"] == "active"
    assert "RuntimeError: handler bug" in error["exception"]


def test_an_answer_json_cannot_hold_is_replaced_by_an_error(memory_app: App, logs: io.StringIO) -> None:
    circular: list[Any] = []
    circular.append(circular)
    harness = Harness(memory_app, handlers={"stats": lambda supervisor, arguments: circular})

    harness.receive(harness.request("stats"))
    harness.run_loop()

    [reply] = harness.replies()
    assert reply.ok is False
    assert "could not be encoded" in str(reply.error)


def test_the_handler_table_covers_every_inspect_command() -> None:
    table = handler_table()

    assert set(INSPECT_COMMANDS) <= set(table)


# -- the thread ----------------------------------------------------------------------------------------------------


def _serve_until(harness: Harness, predicate: Callable[[], bool], message: str) -> None:
    def step() -> bool:
        harness.run_loop()
        return predicate()

    wait_for(step, timeout=5, message=message)


def test_the_thread_answers_requests_published_while_it_listens(harness: Harness) -> None:
    harness.control.start()
    try:
        assert harness.control.wait_listening(5)
        request = harness.request("ping")
        harness.server.publish(b"garbage")
        harness.server.publish(request.to_json())

        _serve_until(harness, lambda: bool(harness.server.replies), "a reply")

        assert ControlReply.from_json(harness.server.replies[0][1]).request_id == request.id
    finally:
        harness.control.stop()
    assert all(listener.closed for listener in harness.server.listeners)
    assert harness.server.closed_stores == harness.server.connects


def test_the_thread_reconnects_after_a_broker_error(harness: Harness, logs: io.StringIO) -> None:
    # Given a listening control server whose broker then fails twice
    harness.control.start()
    try:
        assert harness.control.wait_listening(5)
        harness.server.fail_next = 2
        wait_for(lambda: harness.server.connects >= 2 and harness.control.listening.is_set(), timeout=10,
                 message="reconnected")

        # When a request is published after the outage
        request = harness.request("ping")
        harness.server.publish(request.to_json())
        _serve_until(harness, lambda: bool(harness.server.replies), "a reply after reconnecting")
    finally:
        harness.control.stop()

    # Then it is answered, and the outage was logged once and its end once
    assert ControlReply.from_json(harness.server.replies[0][1]).request_id == request.id
    assert [e["event"] for e in _events(logs, "warning")] == ["control server lost the broker; reconnecting"]
    assert [e["event"] for e in _events(logs, "info")] == ["control server reconnected"]


# -- through app.control, on the stub store ------------------------------------------------------------------------


@pytest.fixture
def stub_fleet(memory_app: App) -> Iterator[Supervisor]:
    """A supervisor (no children) whose control server and heartbeat run on the stub store (``memory://``), with
    its main loop taken by a thread; stopped cleanly after the test."""
    from taskfleet.brokers.fleet_store import connect_fleet_store
    from taskfleet.brokers.stub import reset_fleet_state
    from taskfleet.worker.heartbeat import Heartbeat, worker_record

    reset_fleet_state()
    supervisor = fake_supervisor(memory_app, heartbeat_interval_s=0.05)

    def connect() -> Any:
        return connect_fleet_store(memory_app.broker, namespace=memory_app.name)

    control = ControlServer(worker=WORKER, supervisor=supervisor, connect=connect)
    heartbeat = Heartbeat(worker=WORKER, record=lambda: worker_record(supervisor, worker=WORKER), connect=connect,
                          interval_s=0.05)
    stop = threading.Event()

    def main_loop() -> None:
        while not stop.wait(0.01):
            supervisor._run_soon()

    loop = threading.Thread(target=main_loop, daemon=True)
    loop.start()
    control.start()
    heartbeat.start()
    assert control.wait_listening(5)
    yield supervisor
    stop.set()
    control.stop()
    heartbeat.stop()
    loop.join(5)
    reset_fleet_state()


def test_app_control_lists_the_worker_and_its_inspect_answers_on_the_stub_store(
        memory_app: App, stub_fleet: Supervisor) -> None:
    wait_for(lambda: [w.id for w in memory_app.control.workers()] == [WORKER], timeout=5, message="listed")

    assert memory_app.control.inspect(timeout=0.5).ping() == {WORKER: {"ok": "pong"}}
    inspect = memory_app.control.inspect(destination=WORKER, timeout=2)  # returns once the one worker answered
    assert "tests.add" in (inspect.registered() or {})[WORKER]
    assert (inspect.stats() or {})[WORKER]["pool"]["max-concurrency"] == 2
    assert memory_app.control.inspect(destination="host-b:1", timeout=0.3).ping() is None
    assert memory_app.control.ping(destination=WORKER, timeout=2) == [{WORKER: {"ok": "pong"}}]
