"""``task-sent`` from publishers, when the app's ``task_send_sent_event`` is on (Celery's setting of that name).

The producer (``taskfleet.producer``) calls ``SentEvents.emit`` after the broker stored what it published: one
``emit_events`` call per ``publish`` and one per ``send_many`` chunk (so a workflow's messages, which go out with
``publish_many``, cost one call per chunk too). The fleet store is this process's own, opened on first use as
``App.broker`` is, so a forked process opens its own; a lock lets any thread publish. A failure to emit is logged
(rate-limited) and dropped: the message is already stored, and events must never fail a publish. With the setting
off the producer does not call here at all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from taskfleet.fleet.event_sink import EventSink
from taskfleet.fleet.events import FleetEvent, short_repr

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.brokers.fleet_store import FleetStore
    from taskfleet.message import Message


def sent_event(message: Message) -> FleetEvent:
    """``task-sent`` of ``message`` (at its ``created_at``): no ``worker``, since no worker has it yet."""
    return FleetEvent("task-sent", message.created_at, {
        "uuid": message.id, "name": message.task, "queue": message.queue,
        "args": short_repr(tuple(message.args)), "kwargs": short_repr(dict(message.kwargs)),
        "retries": message.retries, "eta": message.eta, "expires": message.expires,
        "root_id": message.root_id or message.id, "parent_id": message.parent_id, "priority": message.priority,
    })


class SentEvents:
    """The ``task-sent`` emitter of one ``App`` (its producer holds one)."""

    __slots__ = ("_app", "_lock", "_sink")

    def __init__(self, app: App) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._sink: tuple[int, EventSink] | None = None

    def emit(self, messages: Sequence[Message]) -> None:
        """Emit ``task-sent`` for ``messages``, published just now, in one call."""
        if not messages:
            return
        encoded = [sent_event(m).to_json() for m in messages]
        with self._lock:
            self._current().emit(encoded)

    def close(self) -> None:
        """Close this process's store, if open (it reopens on next use)."""
        with self._lock:
            current, self._sink = self._sink, None
        if current is not None and current[0] == os.getpid():
            current[1].close()

    def _current(self) -> EventSink:
        pid = os.getpid()
        if self._sink is None or self._sink[0] != pid:  # first use, or a fork: never a parent's connection
            app = self._app

            def open_store() -> FleetStore:
                from taskfleet.brokers.fleet_store import connect_fleet_store  # loaded only when events are on

                return connect_fleet_store(app.broker, namespace=app.name,
                                           events_max_len=app.settings.events_max_len)

            self._sink = (pid, EventSink(open_store))
        return self._sink[1]
