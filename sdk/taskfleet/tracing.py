"""The tracing hook: where the producer and a worker child hand their messages to a tracer, without importing one.

OpenTelemetry is imported only by ``taskfleet.contrib.otel`` (the ``otel`` extra, docs/tracing.md); this module is
the SDK's side of it, so that a process without OpenTelemetry pays a dict lookup per publish and nothing else.

Tracing is on in a process when OpenTelemetry is set up there: decided at a publish while it is undecided (is
``opentelemetry.trace`` imported? then is a tracer provider set?) and once in each worker child, after
``worker_process_init`` (``process_started``). ``taskfleet.contrib.otel.instrument()`` turns it on whatever was
detected, ``uninstrument()`` off for good (no detection after it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from taskfleet.brokers.base import Outgoing
from taskfleet.message import Message

if TYPE_CHECKING:
    from taskfleet.app import App

__all__ = ["Build", "EnqueueMany", "PublishTracer", "install", "process_started", "publisher"]

#: The producer's chunk builder, ``build(start, stop)``: the messages of one ``send_many`` chunk.
Build = Callable[[int, int], list[Message]]
#: The broker call that stores one chunk.
EnqueueMany = Callable[[list[Outgoing]], None]

#: The module OpenTelemetry's API sets a tracer provider through: until something imports it, none can be set.
_OTEL_TRACE = "opentelemetry.trace"


class PublishTracer(Protocol):
    """What the producer calls when tracing is on (``taskfleet.contrib.otel`` implements it)."""

    def publish(self, app: App, message: Message, send: Callable[[Message], None]) -> None:
        """Send ``message`` with ``send``, traced: the message ``send`` gets carries the trace context in its
        headers. Raises what ``send`` raises."""

    def chunks(self, app: App, build: Build, enqueue_many: EnqueueMany) -> tuple[Build, EnqueueMany]:
        """``build`` and ``enqueue_many`` traced: each message ``build`` returns carries its own trace context, and
        the spans of a chunk end once ``enqueue_many`` has stored it (or raised). They are called in turn, chunk by
        chunk, on the calling thread."""


class _State:
    """This process's tracing decision: ``decided`` False while tracing is undecided (auto-detection)."""

    __slots__ = ("decided", "publisher")

    def __init__(self) -> None:
        self.decided = False
        self.publisher: PublishTracer | None = None


_state = _State()


def publisher() -> PublishTracer | None:
    """The tracer of this process's publishes, or None (called at each publish: a dict lookup when undecided and
    OpenTelemetry is not loaded, an attribute read once decided)."""
    state = _state
    if state.decided:
        return state.publisher
    if _OTEL_TRACE not in sys.modules:
        return None
    return _detect()


def install(tracer: PublishTracer | None) -> None:
    """Decide: publishes are traced by ``tracer`` (None: not traced, and no detection later). For
    ``taskfleet.contrib.otel``'s ``instrument`` and ``uninstrument``."""
    _state.publisher = tracer
    _state.decided = True


def process_started() -> None:
    """A worker child's hook, after its ``worker_process_init`` receivers ran (one of them may have set a tracer
    provider up) and before it fetches: trace its tasks and publishes when OpenTelemetry is set up, unless tracing
    was turned off (``uninstrument``)."""
    if _state.decided and _state.publisher is None:
        return
    if _OTEL_TRACE in sys.modules:
        _detect()


def _detect() -> PublishTracer | None:
    """Turn tracing on when a tracer provider is set (``taskfleet.contrib.otel.instrument_if_configured``); stays
    undecided otherwise, to look again at the next publish."""
    try:
        from taskfleet.contrib import otel
    except ImportError:  # opentelemetry-api loaded, but not the part the extra needs: no tracing
        install(None)
        return None
    otel.instrument_if_configured()
    return _state.publisher
