"""Specification of the fleet commands (``taskfleet workers | inspect | control | revoke``): how they parse, what
they print from given records and replies, their ``--json`` and exit statuses. The workers are faked here (an app
whose ``control`` answers what the test says, or a thread answering through the in-process fleet store,
``memory://``); tests/integration/test_cli_fleet.py runs them against real ones."""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.cli import build_parser, control_command, fleet_commands, inspect_command, revoke_command
from taskfleet.cli import workers_command as workers_cli
from taskfleet.errors import ConfigurationError
from taskfleet.fleet.protocol import ControlReply, ControlRequest
from taskfleet.fleet.records import ChildState, PodInfo, WorkerRecord

NOW = 1_700_000_000.0


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def record(worker: str = "web-1:7", **changes: Any) -> WorkerRecord:
    fields: dict[str, Any] = {
        "id": worker, "app": "billing", "hostname": worker.split(":")[0], "pid": 7, "queues": ("default", "emails"),
        "concurrency": 4, "version": "0.1", "started_at": NOW - 100, "sent_at": NOW - 1.2, "processed": 12,
        "failed": 1, "children": (ChildState(0, 100, "t1", "billing.charge", NOW - 3), ChildState(1, 101)),
    }
    return WorkerRecord(**{**fields, **changes})


def ok(worker: str, result: Any) -> ControlReply:
    return ControlReply(request_id="r1", worker=worker, ok=True, result=result)


def refused(worker: str, error: str) -> ControlReply:
    return ControlReply(request_id="r1", worker=worker, ok=False, error=error)


# -- parsing -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["rate-limit", "rate_limit"])
def test_control_takes_the_hyphenated_and_celerys_underscore_spelling_of_a_command(spelling: str) -> None:
    args = parse("control", spelling, "billing.charge", "10/m", "--app-name", "billing")

    assert (args.control, args.task, args.rate) == ("rate_limit", "billing.charge", "10/m")


@pytest.mark.parametrize("flag", ["--worker", "-d", "--destination"])
def test_a_worker_is_named_with_worker_or_celerys_d_and_destination_repeatably(flag: str) -> None:
    args = parse("inspect", "active", flag, "web-1:7", flag, "web-2:8", "--app-name", "billing")

    assert args.workers == ["web-1:7", "web-2:8"]


def test_celerys_comma_separated_destination_names_several_workers() -> None:
    assert parse("inspect", "ping", "-d", "web-1:7,web-2:8", "--app-name", "billing").workers == ["web-1:7", "web-2:8"]


def test_without_worker_every_worker_is_asked_within_one_second() -> None:
    args = parse("inspect", "ping", "--app-name", "billing")

    assert (args.workers, args.timeout) == (None, 1.0)


@pytest.mark.parametrize(("argv", "expected"), [
    (("pool-grow",), 1), (("pool_shrink", "3"), 3),
])
def test_pool_commands_default_to_one_child(argv: tuple[str, ...], expected: int) -> None:
    assert parse("control", *argv, "--app-name", "billing").n == expected


def test_time_limit_takes_seconds_and_none_for_no_limit() -> None:
    args = parse("control", "time_limit", "billing.charge", "none", "30", "--app-name", "billing")

    assert (args.soft, args.hard) == (None, 30.0)


def test_rate_limit_none_removes_the_limit() -> None:
    assert parse("control", "rate-limit", "billing.charge", "none", "--app-name", "billing").rate is None


@pytest.mark.parametrize("argv", [
    ("inspect", "purge"),  # not an inspect command
    ("control", "pool-grow", "0"),
    ("control", "time-limit", "t", "-1"),
    ("revoke", "t1", "--terminate", "--signal", "SIGNOPE"),
    ("inspect", "ping", "--timeout", "0"),
    ("inspect", "ping", "-A", "tasks:app", "--app-name", "billing"),
])
def test_bad_command_lines_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse(*argv)

    assert stopped.value.code == 2


def test_revoke_takes_many_ids_and_names_the_signal_as_workers_are_sent_it() -> None:
    args = parse("revoke", "t1", "t2", "--terminate", "--signal", "kill", "--app-name", "billing")

    assert (args.task_ids, args.terminate, args.signal) == (["t1", "t2"], True, "SIGKILL")


def test_a_fleet_command_needs_the_apps_name_since_the_fleet_lives_under_it() -> None:
    args = parse("workers", "--broker", "memory://")

    with pytest.raises(ConfigurationError, match="--app-name"):
        fleet_commands.fleet_app(args, {})


def test_app_name_and_the_environments_broker_make_the_app() -> None:
    app = fleet_commands.fleet_app(parse("workers", "--app-name", "billing"), {"TASKFLEET_BROKER_URL": "memory://"})

    assert (app.name, app.settings.broker_url) == ("billing", "memory://")


# -- workers -------------------------------------------------------------------------------------------------------

def test_a_worker_row_has_pod_queues_busy_of_concurrency_counts_and_last_seen() -> None:
    row = workers_cli.worker_row(record(pod=PodInfo("web-1", "prod", "uid-1")), now=NOW)

    assert row == ("web-1:7", "prod/web-1", "default,emails", "1/4", "12", "1", "1.2s ago")


def test_a_worker_outside_kubernetes_has_no_pod_and_a_draining_one_says_so() -> None:
    row = workers_cli.worker_row(record(draining=True), now=NOW)

    assert (row[0], row[1]) == ("web-1:7 (draining)", "-")


@pytest.mark.parametrize(("age_s", "text"), [
    (0.04, "0.0s ago"), (1.25, "1.2s ago"), (-3.0, "0.0s ago"), (125.0, "2m05s ago"), (7300.0, "2h01m ago"),
])
def test_last_seen_reads_as_a_short_age(age_s: float, text: str) -> None:
    assert fleet_commands.ago(age_s) == text


def test_the_workers_table_has_the_issues_columns() -> None:
    table = workers_cli.workers_table([record()], now=NOW)

    assert [c.header for c in table.columns] == ["WORKER", "POD", "QUEUES", "BUSY", "PROCESSED", "FAILED",
                                                 "LAST SEEN"]


def test_workers_json_is_the_records_as_stored() -> None:
    data = workers_cli.record_json(record())

    assert WorkerRecord.from_json(json.dumps(data).encode()) == record()


# -- inspect -------------------------------------------------------------------------------------------------------

def test_an_active_answer_lists_each_task_with_its_arguments_and_how_long_it_has_run() -> None:
    found = fleet_commands.outcome([ok("web-1:7", [{"id": "t1", "name": "billing.charge", "args": [1],
                                                    "kwargs": {"n": 2}, "time_start": NOW - 3.0,
                                                    "worker_pid": 100}])], None)

    assert inspect_command.answer_lines("active", found, now=NOW) == [
        "[bold]web-1:7[/]: 1 active", "  t1  billing.charge  (1, n=2)  running 3.0s  pid 100"]


def test_a_reserved_message_shows_its_id_queue_redelivery_and_child() -> None:
    item = {"id": "t3", "message_id": "t3:1", "delivery_info": {"routing_key": "emails", "redelivered": True},
            "delivery_count": 2, "worker_pid": 101}

    assert inspect_command.task_line("reserved", item, now=NOW) == "t3  queue emails  delivery 2  pid 101"


def test_a_scheduled_answer_in_celerys_shape_shows_the_eta() -> None:
    item = {"eta": NOW + 12.0, "priority": 0, "request": {"id": "t2", "name": "billing.remind"}}

    assert inspect_command.task_line("scheduled", item, now=NOW) == "t2  billing.remind  eta in 12.0s"


def test_ping_registered_and_stats_answers_read_as_text() -> None:
    assert inspect_command.describe("ping", {"ok": "pong"}, now=NOW) == ("pong", [])
    assert inspect_command.describe("registered", ["a.x", "a.y"], now=NOW) == ("2 tasks", ["a.x", "a.y"])
    assert inspect_command.describe("stats", {"uptime": 3.5, "pool": {"max-concurrency": 4, "processes": [8, 9]},
                                              "pod": None, "draining": False}, now=NOW) == (
        "stats", ["uptime: 3.5", "pool.max-concurrency: 4", "pool.processes: 8, 9", "pod: -", "draining: false"])


def test_a_refusal_is_shown_as_an_error_with_its_reason() -> None:
    found = fleet_commands.outcome([refused("web-1:7", "unknown task")], None)

    assert inspect_command.answer_lines("stats", found, now=NOW) == ["[bold]web-1:7[/]: [red]error[/] unknown task"]


# -- outcomes and exit statuses ------------------------------------------------------------------------------------

def test_replies_are_in_worker_order_and_a_second_answer_from_one_worker_is_ignored() -> None:
    found = fleet_commands.outcome([ok("b:2", 1), ok("a:1", 2), ok("b:2", 3)], None)

    assert [(r.worker, r.result) for r in found.replies] == [("a:1", 2), ("b:2", 1)]
    assert found.exit_code == 0


@pytest.mark.parametrize(("replies", "destination", "code"), [
    ([], None, 1),  # nobody answered
    ([ok("a:1", "pong")], None, 0),
    ([ok("a:1", "pong"), refused("b:2", "no")], None, 1),
    ([ok("a:1", "pong")], ["a:1", "b:2"], 1),  # b:2 was asked for by name and did not answer
])
def test_exit_status_is_one_when_nobody_answered_one_refused_or_one_named_is_missing(
        replies: list[ControlReply], destination: list[str] | None, code: int) -> None:
    assert fleet_commands.outcome(replies, destination).exit_code == code


def test_control_json_has_each_workers_ok_result_and_error_and_the_missing_ones() -> None:
    found = fleet_commands.outcome([ok("a:1", {"ok": "rate limit set"}), refused("b:2", "no such task")],
                                   ["a:1", "b:2", "c:3"])

    assert fleet_commands.replies_json(found) == {
        "a:1": {"ok": True, "result": {"ok": "rate limit set"}, "error": None},
        "b:2": {"ok": False, "result": None, "error": "no such task"},
        "c:3": {"ok": False, "result": None, "error": "no answer"},
    }


@pytest.mark.parametrize(("reply", "cells"), [
    (ok("a:1", {"ok": "new rate limit set"}), ("a:1", "ok", "new rate limit set")),
    (ok("a:1", {"concurrency": 5}), ("a:1", "ok", '{"concurrency": 5}')),
    (ok("a:1", {"ok": "tasks t1 flagged as revoked", "terminated": []}), ("a:1", "ok", "tasks t1 flagged as revoked")),
    (ok("a:1", {"ok": "tasks t1 flagged as revoked", "terminated": ["t1"]}),
     ("a:1", "ok", "tasks t1 flagged as revoked (terminated: t1)")),
    (ok("a:1", None), ("a:1", "ok", "")),
    (refused("a:1", "bad rate '10/x'"), ("a:1", "error", "bad rate '10/x'")),
])
def test_a_control_reply_reads_ok_or_error_and_what_the_worker_said(reply: ControlReply,
                                                                    cells: tuple[str, str, str]) -> None:
    assert fleet_commands.reply_line(reply) == cells


@pytest.mark.parametrize(("timeout_s", "text"), [(1.0, "1.0s"), (2.5, "2.5s"), (0.25, "0.25s"), (10, "10.0s")])
def test_timeouts_read_with_one_decimal_at_least(timeout_s: float, text: str) -> None:
    assert fleet_commands.seconds(timeout_s) == text


# -- the handlers, with faked workers ------------------------------------------------------------------------------

@dataclass
class FakeControl:
    """``app.control`` answering with ``replies``, recording what it was asked."""

    replies: list[ControlReply]
    records: list[WorkerRecord] = field(default_factory=list)
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> list[ControlReply]:
            self.calls.append((name, args, kwargs))
            return self.replies
        return call

    def workers(self) -> list[WorkerRecord]:
        return self.records


@dataclass
class FakeSettings:
    broker_url: str = "redis://:s3cret@broker:6379/0"


@dataclass
class FakeApp:
    control: FakeControl
    name: str = "billing"
    settings: FakeSettings = field(default_factory=FakeSettings)

    def close(self) -> None:
        pass


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> FakeControl:
    control = FakeControl(replies=[])
    app = FakeApp(control)
    for module in (workers_cli, inspect_command, control_command, revoke_command):
        monkeypatch.setattr(module, "fleet_app", lambda args, environ: app)
    return control


def run(*argv: str) -> int:
    args = parse(*argv, "--app-name", "billing")
    code: int = args.handler(args, {})
    return code


def test_an_inspect_nobody_answers_says_so_on_stderr_with_the_masked_broker_and_exits_1(
        fleet: FakeControl, capsys: pytest.CaptureFixture[str]) -> None:
    code = run("inspect", "ping")

    err = capsys.readouterr().err
    assert code == 1
    assert "no worker answered within 1.0s" in err
    assert "redis://:***@broker:6379/0" in err
    assert "s3cret" not in err


def test_inspect_json_is_what_the_python_api_returns(fleet: FakeControl,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    fleet.replies = [ok("a:1", {"ok": "pong"}), refused("b:2", "busy")]

    code = run("inspect", "ping", "--json")

    assert json.loads(capsys.readouterr().out) == {"a:1": {"ok": "pong"}, "b:2": {"error": "busy"}}
    assert code == 1


def test_control_sends_the_command_to_the_named_workers_and_prints_each_reply(
        fleet: FakeControl, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.replies = [ok("a:1", {"ok": "rate limit set"})]

    code = run("control", "rate_limit", "billing.charge", "10/m", "-d", "a:1", "--timeout", "2")

    assert fleet.calls == [("rate_limit", ("billing.charge", "10/m"),
                            {"destination": ["a:1"], "reply": True, "timeout": 2.0})]
    assert capsys.readouterr().out.split() == ["a:1", "ok", "rate", "limit", "set"]
    assert code == 0


def test_control_exits_1_when_a_worker_refused(fleet: FakeControl) -> None:
    fleet.replies = [refused("a:1", "no queue named 'x'")]

    assert run("control", "cancel-consumer", "x") == 1


def test_shutdown_of_every_worker_without_a_terminal_refuses_unless_yes(
        fleet: FakeControl, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("control", "shutdown") == 1
    assert fleet.calls == []
    assert "--yes" in capsys.readouterr().err

    fleet.replies = [ok("a:1", {"ok": "shutting down"})]
    assert run("control", "shutdown", "--yes") == 0


def test_revoke_is_not_a_failure_when_no_worker_answered_since_it_is_stored(
        fleet: FakeControl, capsys: pytest.CaptureFixture[str]) -> None:
    code = run("revoke", "t1", "t2", "--terminate")

    assert fleet.calls == [("revoke", (["t1", "t2"],), {"terminate": True, "signal": "SIGTERM", "expires_s": None,
                                                         "destination": None, "reply": True, "timeout": 1.0})]
    out = capsys.readouterr().out
    assert out.startswith("revoked 2 tasks, terminating with SIGTERM where running (stored in the broker)")
    assert "no worker answered within 1.0s" in out
    assert "s3cret" not in out
    assert code == 0


def test_revoke_json_has_the_ids_options_and_replies(fleet: FakeControl,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    fleet.replies = [ok("a:1", {"ok": "revoked 1"})]

    assert run("revoke", "t1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "revoked": ["t1"], "terminate": False, "signal": "SIGTERM",
        "replies": {"a:1": {"ok": True, "result": {"ok": "revoked 1"}, "error": None}}}


def test_workers_json_lists_the_records_and_an_empty_fleet_is_not_an_error(
        fleet: FakeControl, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("workers", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []

    assert run("workers") == 0
    out = capsys.readouterr().out
    assert "no live workers" in out
    assert "redis://:***@broker:6379/0" in out


def test_any_error_message_is_printed_with_url_passwords_masked(capsys: pytest.CaptureFixture[str]) -> None:
    from taskfleet.cli import console

    console.fail("redis fleet store redis://:s3cret@broker:6379/0 unreachable")

    err = capsys.readouterr().err
    assert "redis://:***@broker:6379/0" in err
    assert "s3cret" not in err


# -- through the in-process fleet store (memory://) ----------------------------------------------------------------

class Responder:
    """A worker's control side in a thread: answers each request on the ``memory://`` store of app ``name`` with
    ``answer(request)`` (a ``ControlReply`` without its request id), until ``stop``."""

    def __init__(self, name: str, worker: str, answer: Any) -> None:
        from taskfleet.brokers.stub import StubBroker
        from taskfleet.settings import BrokerSettings

        self.broker = StubBroker(BrokerSettings(url="memory://"))
        self.store = connect_fleet_store(self.broker, namespace=name)
        self.listener = self.store.control_listener(worker)
        self.worker, self.answer = worker, answer
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            for raw in self.listener.receive(0.05):
                request = ControlRequest.from_json(raw)
                if request.reply_to and request.addressed_to(self.worker):
                    ok, result, error = self.answer(request)
                    reply = ControlReply(request.id, self.worker, ok, result, error)
                    self.store.reply(request.reply_to, reply.to_json())

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()
        self.store.close()
        self.broker.close()


def run_on_memory(name: str, *argv: str) -> int:
    args = parse(*argv, "--app-name", name, "--broker", "memory://")
    code: int = args.handler(args, {})
    return code


def test_inspect_and_control_reach_a_worker_through_the_fleet_store(capsys: pytest.CaptureFixture[str]) -> None:
    def answer(request: ControlRequest) -> tuple[bool, Any, str | None]:
        if request.command == "ping":
            return True, {"ok": "pong"}, None
        return False, None, f"unknown task {request.arguments['task_name']!r}"

    responder = Responder("fleet-memory-1", "web-1:7", answer)
    try:
        assert run_on_memory("fleet-memory-1", "inspect", "ping") == 0
        assert capsys.readouterr().out == "web-1:7: pong\n"

        assert run_on_memory("fleet-memory-1", "control", "rate_limit", "billing.nope", "10/m") == 1
        assert capsys.readouterr().out.split() == ["web-1:7", "error", "unknown", "task", "'billing.nope'"]

        assert run_on_memory("fleet-memory-1", "inspect", "ping", "-d", "web-2:8", "--timeout", "0.2") == 1
        assert "no worker answered within 0.2s" in capsys.readouterr().err
    finally:
        responder.stop()


def test_workers_lists_the_heartbeats_in_the_fleet_store(capsys: pytest.CaptureFixture[str]) -> None:
    from taskfleet.brokers.stub import StubBroker
    from taskfleet.settings import BrokerSettings

    broker = StubBroker(BrokerSettings(url="memory://"))
    store = connect_fleet_store(broker, namespace="fleet-memory-2")
    store.heartbeat("web-1:7", record(sent_at=time.time()).to_json(), ttl_s=6.0)
    try:
        assert run_on_memory("fleet-memory-2", "workers", "--json") == 0
        [listed] = json.loads(capsys.readouterr().out)
        assert (listed["id"], listed["queues"]) == ("web-1:7", ["default", "emails"])
    finally:
        store.close()
        broker.close()
