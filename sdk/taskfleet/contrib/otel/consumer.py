"""``ConsumerTracer``: a ``process <queue>`` span (kind CONSUMER) around each task a worker child runs, the child
of the ``send`` span whose context its message carries, current while the task runs (so the spans the task makes,
and those of its retries and workflow follow-ups, are its children).

It is built on the task signals (``taskfleet.signals``), which the executor sends only for a task it runs: a
message that is prefetched and given back, dropped (lease lost), a duplicate of a finished one, expired (revoked)
before it started or of an unknown task (dead-lettered) gets no span. ``task_failure`` records the exception and
sets status ERROR; ``task_retry`` records the exception it retries on (status ERROR: this attempt failed; a
``self.retry()`` without one leaves the status unset); ``task_postrun`` ends the span with the stored state
(``taskfleet.task.state``), or status ERROR when no outcome could be stored and the message will run again.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from taskfleet import signals
from taskfleet.contrib.otel import attributes as attr
from taskfleet.errors import Retry

#: The signals a ``ConsumerTracer`` receives, and the name of the method that receives each.
_RECEIVERS = (
    (signals.task_prerun, "prerun"),
    (signals.task_failure, "failed"),
    (signals.task_retry, "retried"),
    (signals.task_postrun, "postrun"),
)


class ConsumerTracer:
    """The receivers of the task signals that record the process spans with OpenTelemetry's ``tracer``."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        #: The span of each running task, by task id, and the token that makes it current (one at a time in a
        #: child; keyed so that a receiver never ends another task's span).
        self._running: dict[str, tuple[Span, Token[Context]]] = {}

    def connect(self) -> None:
        """Receive the task signals (until ``disconnect``)."""
        for signal, method in _RECEIVERS:
            signal.connect(getattr(self, method), weak=False)

    def disconnect(self) -> None:
        for signal, method in _RECEIVERS:
            signal.disconnect(getattr(self, method))

    def prerun(self, sender: Any = None, *, task_id: str, **named: Any) -> None:
        """``task_prerun``: begin the span, its parent the context the message's headers carry."""
        request = sender.request
        parent = propagate.extract(dict(request.headers))
        span = self._tracer.start_span(attr.span_name(attr.PROCESS, request.queue), context=parent,
                                       kind=SpanKind.CONSUMER, attributes={
                                           attr.SYSTEM: attr.messaging_system(sender.app.settings.broker_url),
                                           attr.DESTINATION: request.queue or "",
                                           attr.MESSAGE_ID: task_id,
                                           attr.OPERATION_TYPE: attr.PROCESS,
                                           attr.OPERATION_NAME: attr.PROCESS,
                                           attr.TASK_NAME: sender.name,
                                           attr.TASK_RETRIES: request.retries,
                                       })
        self._running[task_id] = (span, context.attach(trace.set_span_in_context(span, parent)))

    def failed(self, sender: Any = None, *, task_id: str, exception: BaseException, **named: Any) -> None:
        """``task_failure``: the exception recorded, status ERROR."""
        running = self._running.get(task_id)
        if running is not None:
            _record(running[0], exception)

    def retried(self, sender: Any = None, *, request: Any, reason: Retry, **named: Any) -> None:
        """``task_retry``: the exception retried on recorded, status ERROR (none: the status stays unset)."""
        running = self._running.get(request.id)
        if running is not None and reason.exc is not None:
            _record(running[0], reason.exc)

    def postrun(self, sender: Any = None, *, task_id: str, state: Any = None, **named: Any) -> None:
        """``task_postrun``: the stored state set, the span ended and no longer current."""
        running = self._running.pop(task_id, None)
        if running is None:
            return
        span, token = running
        if state is None:
            span.set_status(Status(StatusCode.ERROR, "no outcome could be stored: the message runs again"))
        else:
            span.set_attribute(attr.TASK_STATE, str(state))
        context.detach(token)
        span.end()


def _record(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
