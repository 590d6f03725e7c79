"""Task events from real worker processes and publishers on every broker, read back from the app's event stream,
and ``taskfleet events --json`` printing them (docs/events.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskfleet import App
from taskfleet._connections import schemes
from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.fleet.events import FleetEvent
from tests import events_tasks, tasks
from tests.conftest import StartWorker
from tests.integration.test_fleet_store import most_kept
from tests.support.brokers import BrokerKind
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stream(app: App, broker_kind: BrokerKind) -> Iterator[FleetStore]:
    """A reader of the test app's event stream."""
    kind = schemes.kind_of(app.settings.broker_url or "", "fleet_store")
    try:
        schemes.load(str(kind.fleet_store))
    except (ImportError, AttributeError):
        pytest.skip(f"no fleet store on {broker_kind.name} in this branch yet (helper FS's)")
    store = connect_fleet_store(app.broker, namespace=app.name)
    yield store
    store.close()


def read_all(store: FleetStore) -> list[FleetEvent]:
    events, cursor = [], None
    while True:
        raw, cursor = store.read_events(cursor, limit=1000)
        if not raw:
            return events
        events.extend(FleetEvent.from_json(item) for item in raw)


def wait_events(store: FleetStore, done: Callable[[list[FleetEvent]], bool], timeout: float = 15.0
                ) -> list[FleetEvent]:
    seen: list[list[FleetEvent]] = [[]]

    def check() -> bool:
        seen[0] = read_all(store)
        return done(seen[0])

    try:
        wait_for(check, timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"events never complete; got {[(e.type, e.fields.get('uuid')) for e in seen[0]]}"
                             ) from None
    return seen[0]


def of(events: list[FleetEvent], task_id: str) -> list[str]:
    """The types of ``task_id``'s events in the order they happened: each child sends its own in order, but two
    children's batches reach the stream in either order (a retry runs in whichever child fetches it)."""
    return [e.type for e in sorted(events, key=lambda e: e.timestamp) if e.fields.get("uuid") == task_id]


def test_a_worker_started_with_events_reports_each_tasks_life_and_how_it_ended(
        app: App, start_worker: StartWorker, stream: FleetStore, marker: str) -> None:
    # Given a task that expired while no worker ran, and a worker started with -E
    expired = tasks.record.apply_async(args=(marker, "stale"), expires=0.2)
    time.sleep(0.5)
    worker = start_worker(extra=["-E"])
    # When it runs a success, a failure, a retry and a task nobody registered
    ok = tasks.add.delay(2, 3)
    failed = tasks.overdraw.delay(100)
    retried = tasks.flaky.delay(marker, 1)
    unknown = app.send("tests.no_such_task", queue="tests")
    assert ok.get(timeout=10) == 5
    assert retried.get(timeout=15) == "ok after 1 retries"

    # Then each has its events, Celery's names, with this worker's id
    def complete(events: list[FleetEvent]) -> bool:
        return ("task-succeeded" in of(events, ok.id) and "task-failed" in of(events, failed.id)
                and of(events, retried.id).count("task-succeeded") == 1
                and "task-dead-lettered" in of(events, unknown.id) and "task-revoked" in of(events, expired.id))

    events = wait_events(stream, complete)
    assert of(events, ok.id) == ["task-received", "task-started", "task-succeeded"]
    assert of(events, failed.id) == ["task-received", "task-started", "task-failed"]
    assert of(events, retried.id) == ["task-received", "task-started", "task-retried",
                                      "task-received", "task-started", "task-succeeded"]
    assert of(events, unknown.id)[-1] == "task-dead-lettered"
    assert of(events, expired.id) == ["task-received", "task-revoked"]
    by_type = {(e.type, e.fields["uuid"]): e.fields for e in events if e.type.startswith("task-")}
    succeeded = by_type[("task-succeeded", ok.id)]
    assert (succeeded["name"], succeeded["queue"], succeeded["result"]) == ("tests.add", "tests", "5")
    assert succeeded["runtime"] >= 0
    assert succeeded["worker"].endswith(f":{worker.pid}")
    assert "InsufficientFunds" in by_type[("task-failed", failed.id)]["exception"]
    assert "not registered" in by_type[("task-dead-lettered", unknown.id)]["reason"]
    assert by_type[("task-revoked", expired.id)]["reason"] == "expired"


def test_a_worker_started_without_events_emits_none(app: App, start_worker: StartWorker,
                                                    stream: FleetStore) -> None:
    start_worker()
    tasks.add.delay(1, 1).get(timeout=10)
    tasks.overdraw.delay(1)
    time.sleep(0.5)  # more than the background tick that would have sent them

    assert read_all(stream) == []


def test_a_publisher_with_task_send_sent_event_emits_task_sent_for_each_message(
        app: App, stream: FleetStore) -> None:
    app.configure(task_send_sent_event=True)
    try:
        one = tasks.add.delay(1, 2)
        many = app.send_many(tasks.add.s(i, i) for i in range(5))
    finally:
        app.configure(task_send_sent_event=False)

    events = read_all(stream)
    assert [e.type for e in events] == ["task-sent"] * 6
    assert [e.fields["uuid"] for e in events] == [one.id, *(r.id for r in many)]
    assert (events[0].fields["name"], events[0].fields["queue"], events[0].fields["args"]) == (
        "tests.add", "tests", "(1, 2)")


def test_the_event_stream_stays_within_its_cap_however_many_tasks_run(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, broker_url: str, stream: FleetStore) -> None:
    # Given a worker whose app turns events on by setting, with a stream capped at 50
    start_worker(app="tests.events_tasks:app", queues="events")
    sender = App("events", broker=broker_url, default_queue="events")
    try:
        # When 200 tasks run (800 events)
        sender.send_many(events_tasks.add.s(i, 1) for i in range(200))
        wait_for(lambda: sender.broker.queue_depth("events").total == 0, 30, message="the 200 tasks did not run")
        time.sleep(1.0)  # the children's last batches of events (sent every 0.25 s)
        reader = connect_fleet_store(sender.broker, namespace="events")
        try:
            events = read_all(reader)
        finally:
            reader.close()
    finally:
        sender.close()
    # Then the stream kept only about the latest 50 (as the broker caps it: docs/brokers.md, "Fleet state")
    cap = events_tasks.EVENTS_MAX_LEN
    smallest = min(len(event.to_json()) for event in events)
    # (a child's batch is one stream entry on Redis, and may hold all 800: it is trimmed whole)
    assert cap <= len(events) <= most_kept(broker_kind, cap, smallest, 800), len(events)


def test_taskfleet_events_json_prints_each_event_as_a_json_line_until_interrupted(
        app: App, start_worker: StartWorker, broker_url: str, stream: FleetStore) -> None:
    # Given `taskfleet events --json` watching the app's stream
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TASKFLEET_BROKER_URL", None)
    watcher = subprocess.Popen([sys.executable, "-m", "taskfleet", "events", "-A", "tests.tasks:app", "--broker",
                                broker_url, "--json", "--from-start"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[dict[str, object]] = []

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # When a worker with -E runs a task
        start_worker(extra=["-E"])
        result = tasks.add.delay(20, 22)
        assert result.get(timeout=10) == 42
        wait_for(lambda: any(line["type"] == "task-succeeded" and line["uuid"] == result.id for line in lines), 15,
                 message="taskfleet events printed no task-succeeded")
    finally:
        # Then Ctrl-C ends it cleanly
        watcher.send_signal(signal.SIGINT)
        code = watcher.wait(timeout=10)
        reader.join(timeout=5)
    assert code == 0, watcher.stderr.read() if watcher.stderr else ""
    assert [line["type"] for line in lines if line.get("uuid") == result.id] == [
        "task-received", "task-started", "task-succeeded"]


def test_a_worker_started_with_events_reports_itself_online_beating_and_offline(
        app: App, start_worker: StartWorker, stream: FleetStore) -> None:
    # Given a worker with -E and a short heartbeat
    worker = start_worker(extra=["-E", "--heartbeat-interval", "0.5"])

    def mine(events: list[FleetEvent], kind: str) -> list[FleetEvent]:
        return [e for e in events if e.type == kind and str(e.fields.get("worker", "")).endswith(f":{worker.pid}")]

    # Then it says it is online, then beats, each event with its record
    events = wait_events(stream, lambda got: bool(mine(got, "worker-online")) and bool(mine(got, "worker-heartbeat")))
    online = mine(events, "worker-online")[0]
    assert online.fields["pid"] == worker.pid
    assert online.fields["record"]["queues"] == ["tests"]
    # When it stops cleanly, its last event says it is offline
    worker.stop()
    wait_events(stream, lambda got: bool(mine(got, "worker-offline")))
