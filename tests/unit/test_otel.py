"""OpenTelemetry tracing in one process (taskfleet.contrib.otel, docs/tracing.md): a ``send`` span per message
published, carried in its headers, and a ``process`` span per task run, its child. Across a real worker process
and each broker: tests/integration/test_tracing.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskfleet import App, Message, tracing
from taskfleet.contrib import otel
from taskfleet.errors import BrokerConnectionError
from taskfleet.worker.executor import Executor
from tests import tasks
from tests.support.layout import REPO

QUEUE = "tests"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process with a provider of the test's own (the global one is left alone), off after."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    otel.instrument(tracer_provider=provider)
    yield spans
    otel.uninstrument()


@pytest.fixture
def undecided(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's tracing decision as a fresh process has it (auto-detection)."""
    monkeypatch.setattr(tracing, "_state", tracing._State())


def _run_next(app: App) -> None:
    [delivery] = app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
    Executor(app, app.backend, on_start=lambda started: None).run(delivery)


def _fetched(app: App) -> Message:
    [delivery] = app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
    return Message.decode(delivery.data, accept=frozenset({"json"}))


def _one(spans: InMemorySpanExporter, kind: SpanKind) -> ReadableSpan:
    found = [span for span in spans.get_finished_spans() if span.kind is kind]
    assert len(found) == 1, found
    return found[0]


# -- the producer span -----------------------------------------------------------------------------------------


def test_a_published_message_gets_a_send_span_with_the_messaging_attributes(
        memory_app: App, exporter: InMemorySpanExporter) -> None:
    result = tasks.add.delay(2, 3)
    span = _one(exporter, SpanKind.PRODUCER)
    assert span.name == "send tests"
    assert dict(span.attributes or {}) == {
        "messaging.system": "memory", "messaging.destination.name": "tests", "messaging.message.id": result.id,
        "messaging.operation.type": "send", "messaging.operation.name": "send",
        "taskfleet.task.name": "tests.add", "taskfleet.task.retries": 0,
    }


def test_the_message_carries_its_send_spans_context_in_a_w3c_traceparent_header(
        memory_app: App, exporter: InMemorySpanExporter) -> None:
    tasks.add.delay(2, 3)
    span = _one(exporter, SpanKind.PRODUCER)
    headers = dict(_fetched(memory_app).headers)
    assert headers["traceparent"].startswith(f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-")
    carried = trace.get_current_span(propagate.extract(headers)).get_span_context()
    assert (carried.trace_id, carried.span_id) == (span.context.trace_id, span.context.span_id)


def test_the_trace_headers_a_message_is_sent_with_are_replaced_by_its_own(
        memory_app: App, exporter: InMemorySpanExporter) -> None:
    # Given a message carrying the trace headers of another send (as a retry carries its first attempt's)
    stale = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "vendor=1",
             "x-app": "kept"}
    memory_app.send("tests.add", args=(1, 1), headers=stale)
    # Then it is sent with its own send span's context only, and the other headers as they were
    span = _one(exporter, SpanKind.PRODUCER)
    headers = dict(_fetched(memory_app).headers)
    assert headers["traceparent"].startswith(f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-")
    assert "tracestate" not in headers
    assert headers["x-app"] == "kept"


def test_a_send_span_is_the_child_of_the_span_current_where_the_task_is_sent(
        memory_app: App, exporter: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test", tracer_provider=otel._Instrumented.provider)
    with tracer.start_as_current_span("web request") as request_span:
        tasks.add.delay(1, 1)
    span = _one(exporter, SpanKind.PRODUCER)
    assert span.parent is not None
    assert span.parent.span_id == request_span.get_span_context().span_id


def test_send_many_gives_each_message_its_own_send_span_and_context(
        memory_app: App, exporter: InMemorySpanExporter) -> None:
    results = memory_app.send_many([("tests.add", (i, i), {}) for i in range(3)])
    spans = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.PRODUCER]
    assert sorted(str((s.attributes or {})["messaging.message.id"]) for s in spans) == sorted(r.id for r in results)
    carried = {_fetched(memory_app).headers["traceparent"][:52] for _ in results}  # flags left out
    assert carried == {f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}" for s in spans}


def test_a_publish_that_fails_ends_its_span_with_the_error_recorded(
        memory_app: App, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise BrokerConnectionError("broker down")

    monkeypatch.setattr(memory_app.broker, "enqueue", refuse)
    with pytest.raises(BrokerConnectionError):
        tasks.add.delay(1, 1)
    span = _one(exporter, SpanKind.PRODUCER)
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


# -- the consumer span -----------------------------------------------------------------------------------------


def test_a_task_run_gets_a_process_span_child_of_its_send_span(
        memory_app: App, exporter: InMemorySpanExporter) -> None:
    result = tasks.add.delay(2, 3)
    _run_next(memory_app)
    send, process = _one(exporter, SpanKind.PRODUCER), _one(exporter, SpanKind.CONSUMER)
    assert process.name == "process tests"
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert dict(process.attributes or {}) == {
        "messaging.system": "memory", "messaging.destination.name": "tests", "messaging.message.id": result.id,
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "taskfleet.task.name": "tests.add", "taskfleet.task.retries": 0, "taskfleet.task.state": "SUCCESS",
    }
    assert process.status.status_code is StatusCode.UNSET


def test_a_failing_tasks_span_has_error_status_and_the_exception_recorded(
        memory_app: App, exporter: InMemorySpanExporter) -> None:
    tasks.fail.delay("boom")
    _run_next(memory_app)
    span = _one(exporter, SpanKind.CONSUMER)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: boom"
    [event] = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "ValueError"
    assert (span.attributes or {})["taskfleet.task.state"] == "FAILURE"


def test_a_retry_is_sent_in_the_process_span_of_the_attempt_that_failed(
        memory_app: App, exporter: InMemorySpanExporter, marker: str) -> None:
    # Given a task that fails once and retries
    tasks.flaky.delay(marker, 1)
    # When its first attempt runs
    _run_next(memory_app)
    # Then the attempt's span records the error, and the retry's send span is its child, in the same trace
    first_send, retry_send = sorted((s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER),
                                    key=lambda s: s.start_time or 0)
    attempt = _one(exporter, SpanKind.CONSUMER)
    assert attempt.status.status_code is StatusCode.ERROR
    assert (attempt.attributes or {})["taskfleet.task.state"] == "RETRY"
    assert retry_send.parent is not None
    assert retry_send.parent.span_id == attempt.context.span_id
    assert retry_send.context.trace_id == first_send.context.trace_id
    assert (retry_send.attributes or {})["taskfleet.task.retries"] == 1


def test_a_message_that_is_not_run_gets_no_process_span(memory_app: App, exporter: InMemorySpanExporter) -> None:
    # Given a message that expired before it started and one of a task no worker knows
    memory_app.send("tests.add", args=(1, 1), expires=datetime.now(UTC) - timedelta(seconds=1))
    memory_app.send("tests.no_such_task")
    # When the worker takes them (revoked; dead-lettered)
    _run_next(memory_app)
    _run_next(memory_app)
    # Then each has its send span and neither a process span
    kinds = [span.kind for span in exporter.get_finished_spans()]
    assert kinds == [SpanKind.PRODUCER, SpanKind.PRODUCER]


# -- when tracing is on ----------------------------------------------------------------------------------------


def test_without_opentelemetry_loaded_a_publish_is_not_traced_and_nothing_is_imported(
        undecided: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "opentelemetry.trace")
    assert tracing.publisher() is None
    assert "opentelemetry.trace" not in sys.modules


def test_a_process_that_never_loads_opentelemetry_sends_without_importing_it() -> None:
    script = ("import sys\n"
              "from tests import tasks\n"
              "tasks.app.configure(broker='memory://')\n"
              "tasks.add.delay(1, 2)\n"
              "tasks.app.send_many([('tests.add', (1, 2), {})] * 3)\n"
              "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_process_without_a_tracer_provider_set_stays_undecided_until_one_is(
        undecided: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert tracing.publisher() is None
    monkeypatch.setattr(trace, "get_tracer_provider", TracerProvider)
    try:
        assert tracing.publisher() is not None
    finally:
        otel.uninstrument()


def test_uninstrument_turns_tracing_off_for_good(undecided: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", TracerProvider)
    otel.uninstrument()
    tracing.process_started()
    assert tracing.publisher() is None


def test_a_worker_child_traces_its_tasks_when_a_provider_is_set_by_worker_process_init(
        undecided: None, monkeypatch: pytest.MonkeyPatch, memory_app: App) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    tracing.process_started()
    try:
        tasks.add.delay(1, 2)
        _run_next(memory_app)
    finally:
        otel.uninstrument()
    assert sorted(span.kind.name for span in spans.get_finished_spans()) == ["CONSUMER", "PRODUCER"]


def test_a_noop_tracer_provider_turns_tracing_off(undecided: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert tracing.publisher() is None
    assert tracing._state.decided
