"""OpenTelemetry tracing (the ``otel`` extra, docs/tracing.md): a ``send <queue>`` span per message published and a
``process <queue>`` span per task run, its child, with the messaging semantic conventions' attributes.

Nothing to call in the usual case: a process where a tracer provider is set up (``opentelemetry-instrument``, or
``trace.set_tracer_provider`` in the app module) traces its publishes from the first one after it, and each worker
child traces its tasks when a provider is set by the time its ``worker_process_init`` receivers have run
(``taskfleet.tracing`` decides). ``instrument()`` turns tracing on at once (with a provider of its own, say);
``uninstrument()`` turns it off for the process, detection included.

This package is the only one that imports ``opentelemetry`` (an import-linter contract).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, TracerProvider

from taskfleet import __version__, signals, tracing
from taskfleet.contrib.otel.consumer import ConsumerTracer
from taskfleet.contrib.otel.producer import ProducerTracer

__all__ = ["instrument", "instrument_if_configured", "is_configured", "uninstrument"]

#: How long a worker child waits for its spans to be exported as it exits, in milliseconds.
FLUSH_TIMEOUT_MS = 5000


class _Instrumented:
    """What ``instrument`` set up in this process: the provider and the task-signal receivers."""

    provider: TracerProvider | None = None
    consumer: ConsumerTracer | None = None


def instrument(*, tracer_provider: TracerProvider | None = None) -> None:
    """Trace this process's publishes and the tasks it runs with ``tracer_provider`` (default: the global one,
    which may be set later: its spans are recorded from then on)."""
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    tracer = trace.get_tracer("taskfleet", __version__, tracer_provider=provider)
    _disconnect()
    consumer = ConsumerTracer(tracer)
    consumer.connect()
    signals.worker_process_shutdown.connect(_flush, weak=False)
    _Instrumented.provider, _Instrumented.consumer = provider, consumer
    tracing.install(ProducerTracer(tracer))


def uninstrument() -> None:
    """Stop tracing in this process, and detecting whether to (until ``instrument``)."""
    _disconnect()
    tracing.install(None)


def is_configured() -> bool:
    """True when a tracer provider is set globally (not OpenTelemetry's default proxy, nor a no-op one)."""
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


def instrument_if_configured() -> bool:
    """``instrument()`` with the global tracer provider when one is set (``is_configured``); True when it did.
    A no-op provider set on purpose turns tracing off for good."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, NoOpTracerProvider):
        uninstrument()
        return False
    if isinstance(provider, ProxyTracerProvider):
        return False
    instrument(tracer_provider=provider)
    return True


def _disconnect() -> None:
    if _Instrumented.consumer is not None:
        _Instrumented.consumer.disconnect()
    signals.worker_process_shutdown.disconnect(_flush)
    _Instrumented.provider = _Instrumented.consumer = None


def _flush(sender: Any = None, **named: Any) -> None:
    """``worker_process_shutdown``: export the child's last spans (a child ends with ``os._exit``, so the SDK's
    exit handler that would flush a ``BatchSpanProcessor`` never runs)."""
    force_flush = getattr(_Instrumented.provider, "force_flush", None)
    if callable(force_flush):
        force_flush(FLUSH_TIMEOUT_MS)
