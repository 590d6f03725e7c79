"""Task and worker events, as they go to the app's bounded event stream (``FleetStore.emit_events``).

Names and fields are Celery's (``task-sent``, ``task-received``, ``task-started``, ``task-succeeded``,
``task-failed``, ``task-retried``, ``task-revoked``, ``worker-online``, ``worker-heartbeat``, ``worker-offline``),
plus ``task-dead-lettered`` (Celery's nearest is ``task-rejected``). Workers emit task events when started with
``--events`` (Celery's ``-E``, ``worker_send_task_events``); publishers emit ``task-sent`` when the app's
``task_send_sent_event`` says so. The stream keeps the latest ``events_max_len`` events (never unbounded memory).

Fields by type (all optional but ``type`` and ``timestamp``; times are Unix seconds):

- every task event: ``uuid`` (the task id), ``name``, ``queue``, ``worker`` (worker id; not on ``task-sent``)
- ``task-sent`` / ``task-received``: ``args`` and ``kwargs`` (``repr``, cut to ``ARGS_REPR_MAX`` characters),
  ``retries``, ``eta``, ``expires``, ``root_id``, ``parent_id``
- ``task-succeeded``: ``runtime`` (seconds), ``result`` (``repr``, cut)
- ``task-failed`` / ``task-retried`` / ``task-dead-lettered``: ``exception`` (``Type: message``), ``traceback``
  (failed only), ``reason`` (dead-lettered)
- ``task-revoked``: ``reason`` (``revoked``, ``expired``), ``terminated``, ``signum``
- worker events: ``record``, the worker's heartbeat record as a dict (``taskfleet.fleet.records.WorkerRecord``)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskfleet.errors import DecodeError

TASK_EVENTS: frozenset[str] = frozenset({
    "task-sent", "task-received", "task-started", "task-succeeded", "task-failed", "task-retried", "task-revoked",
    "task-dead-lettered",
})
WORKER_EVENTS: frozenset[str] = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})
EVENT_TYPES: frozenset[str] = TASK_EVENTS | WORKER_EVENTS
#: Events an app's event stream keeps (``App(events_max_len=)``): the oldest go first, so the stream never grows
#: past this, whatever emits to it. At about 300 bytes an event, the default holds about 30 MB on the broker.
DEFAULT_EVENTS_MAX_LEN = 100_000
ARGS_REPR_MAX = 1024
#: One encoder for every event: ``json.dumps`` with options builds a new one per call (workers encode thousands a
#: second).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def short_repr(value: Any, limit: int = ARGS_REPR_MAX) -> str:
    """``repr(value)`` cut to ``limit`` characters (an event never carries a huge argument)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not stop an event
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """One event: its ``type`` (one of ``EVENT_TYPES``), when it happened, and its fields (module docstring)."""

    type: str
    timestamp: float = field(default_factory=time.time)
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")

    def to_json(self) -> bytes:
        return _ENCODER.encode({"type": self.type, "timestamp": self.timestamp, **self.fields}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FleetEvent:
        """Decode one event; ``DecodeError`` for bytes that are not one (a reader skips it)."""
        try:
            data = json.loads(raw)
            kind = data.pop("type")
            timestamp = float(data.pop("timestamp"))
            return cls(type=kind, timestamp=timestamp, fields=data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DecodeError(f"malformed event: {exc!r}") from exc
