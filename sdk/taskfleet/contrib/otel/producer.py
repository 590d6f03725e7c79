"""``ProducerTracer``: a ``send <queue>`` span (kind PRODUCER) around each message published, whose context the
message carries to its worker in its headers (W3C ``traceparent``, through the global propagator).

A span begins before the message is encoded, so the ``before_task_publish`` receivers see the trace headers, and
ends once the broker has stored it; a publish that raises ends its span with the exception recorded and status
ERROR. ``send_many``'s messages each get their span, begun as their chunk is built and ended when the chunk is
stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from taskfleet.brokers.base import Outgoing
from taskfleet.contrib.otel import attributes as attr
from taskfleet.message import Message
from taskfleet.tracing import Build, EnqueueMany

if TYPE_CHECKING:
    from taskfleet.app import App


class ProducerTracer:
    """The ``taskfleet.tracing.PublishTracer`` that OpenTelemetry's ``tracer`` records spans with."""

    __slots__ = ("_tracer",)

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def publish(self, app: App, message: Message, send: Callable[[Message], None]) -> None:
        """Send ``message`` with ``send`` in its span, current while the broker stores it."""
        system = attr.messaging_system(app.settings.broker_url)
        with self._tracer.start_as_current_span(attr.span_name(attr.SEND, message.queue), kind=SpanKind.PRODUCER,
                                                attributes=_attributes(message, system)) as span:
            send(_carrying(message, trace.set_span_in_context(span)))

    def chunks(self, app: App, build: Build, enqueue_many: EnqueueMany) -> tuple[Build, EnqueueMany]:
        """``build`` and ``enqueue_many`` with a span per message (``taskfleet.tracing.PublishTracer.chunks``)."""
        system = attr.messaging_system(app.settings.broker_url)
        tracer = self._tracer
        pending: list[Span] = []

        def traced_build(start: int, stop: int) -> list[Message]:
            traced = []
            for message in build(start, stop):
                span = tracer.start_span(attr.span_name(attr.SEND, message.queue), kind=SpanKind.PRODUCER,
                                         attributes=_attributes(message, system))
                pending.append(span)
                traced.append(_carrying(message, trace.set_span_in_context(span)))
            return traced

        def traced_enqueue_many(chunk: list[Outgoing]) -> None:
            try:
                enqueue_many(chunk)
            except BaseException as exc:
                _end_all(pending, exc)
                raise
            _end_all(pending, None)

        return traced_build, traced_enqueue_many


def _attributes(message: Message, system: str) -> dict[str, str | int]:
    return {
        attr.SYSTEM: system,
        attr.DESTINATION: message.queue,
        attr.MESSAGE_ID: message.id,
        attr.OPERATION_TYPE: attr.SEND,
        attr.OPERATION_NAME: attr.SEND,
        attr.TASK_NAME: message.task,
        attr.TASK_RETRIES: message.retries,
    }


def _carrying(message: Message, context: Context) -> Message:
    """``message`` with ``context`` in its headers, in place of any it carried (a retry is sent with the headers of
    the attempt it follows: their ``tracestate`` or ``baggage`` must not outlive the context they came with)."""
    headers = dict(message.headers)
    if headers:
        for name in propagate.get_global_textmap().fields:
            headers.pop(name, None)
    propagate.inject(headers, context=context)
    return message.replace(headers=headers)


def _end_all(spans: list[Span], error: BaseException | None) -> None:
    """End (and forget) ``spans``, each with ``error`` recorded when the chunk could not be stored."""
    for span in spans:
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
    spans.clear()
