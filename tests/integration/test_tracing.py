"""OpenTelemetry tracing across a real worker on every broker (docs/tracing.md): the test process's ``send`` span
and the worker child's ``process`` span are one trace. The worker loads tests/otel_tasks.py, whose module sets a
tracer provider up before the fork (no other code: the child instruments itself) and writes the child's spans to a
file; the test process traces with an in-memory exporter of its own."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from taskfleet import App, State
from taskfleet.contrib import otel
from tests import tasks
from tests.conftest import StartWorker
from tests.otel_tasks import SPANS_ENV
from tests.support.brokers import BrokerKind
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

APP = "tests.otel_tasks:app"


@pytest.fixture
def sent(app: App) -> Iterator[InMemorySpanExporter]:
    """The test process's spans: tracing on with a provider of its own (the global one is left alone), off after."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    otel.instrument(tracer_provider=provider)
    yield spans
    otel.uninstrument()


@pytest.fixture
def spans_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the worker's children write their spans to (as they exit)."""
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv(SPANS_ENV, str(path))
    return path


def _worker_spans(worker: WorkerProcess, path: Path) -> list[dict[str, Any]]:
    """The spans the worker's children recorded, once it has stopped (each child flushes its spans as it exits)."""
    worker.stop()
    assert worker.proc.returncode == 0, worker.log_text()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ids(span: ReadableSpan) -> tuple[str, str]:
    """The trace and span ids of ``span`` as ``to_json`` writes them."""
    return f"0x{span.context.trace_id:032x}", f"0x{span.context.span_id:016x}"


def _producer_span(sent: InMemorySpanExporter, task_id: str) -> ReadableSpan:
    [span] = [s for s in sent.get_finished_spans()
              if s.kind is SpanKind.PRODUCER and (s.attributes or {}).get("messaging.message.id") == task_id]
    return span


def test_a_task_run_by_a_worker_is_a_process_span_child_of_the_send_span_of_its_call(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, sent: InMemorySpanExporter,
        spans_file: Path) -> None:
    # Given a worker whose app module sets a tracer provider up
    worker = start_worker(app=APP, concurrency=1)
    # When a traced process sends a task and the worker runs it
    result = tasks.add.delay(2, 3)
    assert result.get(timeout=20) == 5
    # Then the sender has one send span for it, with the broker's name
    send = _producer_span(sent, result.id)
    assert send.name == "send tests"
    assert (send.attributes or {})["messaging.system"] == broker_kind.name
    # And the worker one process span in the same trace, the send span its parent, with the messaging attributes
    [process] = _worker_spans(worker, spans_file)
    trace_id, send_id = _ids(send)
    assert process["name"] == "process tests"
    assert process["kind"] == "SpanKind.CONSUMER"
    assert process["context"]["trace_id"] == trace_id
    assert process["parent_id"] == send_id
    assert process["attributes"] == {
        "messaging.system": broker_kind.name, "messaging.destination.name": "tests",
        "messaging.message.id": result.id, "messaging.operation.type": "process",
        "messaging.operation.name": "process", "taskfleet.task.name": "tests.add", "taskfleet.task.retries": 0,
        "taskfleet.task.state": "SUCCESS",
    }
    assert process["status"]["status_code"] == "UNSET"


def test_a_failing_tasks_process_span_has_error_status_and_its_exception(
        app: App, start_worker: StartWorker, sent: InMemorySpanExporter, spans_file: Path) -> None:
    worker = start_worker(app=APP, concurrency=1)
    result = tasks.fail.delay("boom")
    wait_for(lambda: result.state is State.FAILURE, timeout=20, message="the task failed")
    [process] = _worker_spans(worker, spans_file)
    assert process["parent_id"] == _ids(_producer_span(sent, result.id))[1]
    assert process["status"] == {"status_code": "ERROR", "description": "ValueError: boom"}
    [event] = process["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"


def test_messages_given_back_unrun_when_a_worker_stops_have_no_process_span(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, sent: InMemorySpanExporter,
        spans_file: Path, marker: str) -> None:
    # Given a worker whose one child runs a slow task with three more prefetched
    worker = start_worker(app=APP, concurrency=1, extra=["--prefetch", "4"])
    running = tasks.slow_record.delay(marker, 1.5)
    waiting = [tasks.add.delay(i, i) for i in range(3)]
    wait_for(lambda: any(line.startswith("start") for line in tasks.lines(marker)), timeout=10,
             message="the slow task started")
    # When the worker is stopped: the slow task finishes, the three are given back unrun
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(timeout=15) == 0
    broker_kind.expect_depth(app.broker, "tests", ready=3, in_flight=0)
    # Then only the task that ran has a process span; each of the four has its send span
    spans = _worker_spans(worker, spans_file)
    assert [span["attributes"]["messaging.message.id"] for span in spans] == [running.id]
    assert {str((s.attributes or {})["messaging.message.id"]) for s in sent.get_finished_spans()} == {
        running.id, *(r.id for r in waiting)}
