"""A worker's own events (``taskfleet worker -E``): ``worker-online`` when it starts, ``worker-heartbeat`` with each
heartbeat record, ``worker-offline`` when it stops cleanly. Each carries the worker's record
(``taskfleet.fleet.records.WorkerRecord``) as a dict under ``record``, plus Celery's top-level fields
(``hostname``, ``pid``, ``active``, ``processed``, ``freq``) so that a reader needs no record decoder.

The supervisor's heartbeat thread calls ``WorkerEvents.emit(kind, record)`` with each record it publishes (one
broker call per heartbeat, through an ``EventSink``: failures logged and dropped): ``emit`` has the heartbeat's
``on_record`` hook signature, so ``WorkerFleet.start(supervisor, on_record=[WorkerEvents.for_app(app,
supervisor.broker).emit])`` wires it. A worker without ``-E`` has no ``WorkerEvents``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Literal

from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.fleet.event_sink import EventSink
from taskfleet.fleet.events import FleetEvent
from taskfleet.fleet.records import WorkerRecord

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.brokers.base import Broker

WorkerEventKind = Literal["worker-online", "worker-heartbeat", "worker-offline"]


def worker_event(kind: WorkerEventKind, record: WorkerRecord, *, timestamp: float | None = None) -> FleetEvent:
    """The ``kind`` event of the worker ``record`` describes (at ``record.sent_at`` unless ``timestamp``)."""
    return FleetEvent(kind, record.sent_at if timestamp is None else timestamp, {
        "worker": record.id, "hostname": record.hostname, "pid": record.pid, "active": record.busy,
        "processed": record.processed, "freq": record.heartbeat_interval_s,
        "record": json.loads(record.to_json()),
    })


class WorkerEvents:
    """Emits one worker's events through ``sink`` (one thread: the supervisor's heartbeat thread)."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    @classmethod
    def for_app(cls, app: App, broker: Broker) -> WorkerEvents:
        """The worker events of ``app``'s worker whose own broker client (the supervisor's) is ``broker``."""
        return cls(EventSink(lambda: connect_fleet_store(broker, namespace=app.name,
                                                         events_max_len=app.settings.events_max_len)))

    def emit(self, kind: WorkerEventKind, record: WorkerRecord) -> None:
        """Emit ``kind`` for ``record`` now (failures are logged and dropped); after ``worker-offline``, the
        worker's last, the store is closed."""
        self.sink.emit([worker_event(kind, record, timestamp=time.time()).to_json()])
        if kind == "worker-offline":
            self.sink.close()

    def online(self, record: WorkerRecord) -> None:
        self.emit("worker-online", record)

    def heartbeat(self, record: WorkerRecord) -> None:
        self.emit("worker-heartbeat", record)

    def offline(self, record: WorkerRecord) -> None:
        """The worker's last event; then the store is closed."""
        self.emit("worker-offline", record)
