"""The test tasks' App (tests/tasks.py) with OpenTelemetry set up in its module, as a service's app module would:
when ``TASKFLEET_TEST_SPANS`` names a file, a global ``TracerProvider`` whose finished spans are written there, one
JSON object a line (``ReadableSpan.to_json``), by a ``BatchSpanProcessor`` made before the worker forks.

Its export delay is an hour: a worker child's spans reach the file only because the child flushes them as it exits
(``taskfleet.contrib.otel``, at ``worker_process_shutdown``), which is what tests/integration/test_tracing.py
checks along with the spans themselves. Run a worker with ``-A tests.otel_tasks:app``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from tests.tasks import app

__all__ = ["app"]

SPANS_ENV = "TASKFLEET_TEST_SPANS"


class FileSpanExporter(SpanExporter):
    """Appends each batch of spans to ``path`` in one write (children of one worker share the file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(span.to_json(indent=None) + "\n" for span in spans))
        return SpanExportResult.SUCCESS


if os.environ.get(SPANS_ENV):
    _provider = TracerProvider()
    _provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(os.environ[SPANS_ENV]),
                                                    schedule_delay_millis=3_600_000))
    trace.set_tracer_provider(_provider)
