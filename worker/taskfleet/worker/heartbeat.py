"""The worker's heartbeat: every ``heartbeat_interval_s`` (default 2 s) the supervisor publishes its
``WorkerRecord`` (taskfleet.fleet.records) to the fleet store, where it expires after ``MISSED_HEARTBEATS``
intervals. So ``taskfleet workers`` lists a live worker with its queues, pool, counts and what each child runs, a
worker killed outright leaves the list within about three intervals by itself, and a clean stop removes it at once
(``FleetStore.forget_worker``).

It runs on a thread of its own with a fleet store of its own (a store is not thread-safe), so a slow or unreachable
broker never holds up the supervisor's loop: a failed beat is logged (once, then at most once a minute:
``LogThrottle``) and the next one reconnects. The record is read from the supervisor's state without locks: plain
attribute reads and copies that CPython makes atomically, at worst one event behind.

``on_record`` hooks see every record the thread builds, with the worker event it stands for (``worker-online`` for
the first, ``worker-heartbeat``, ``worker-offline`` for the last, built at the stop): the task-events side turns
them into worker events. A hook that raises is logged and skipped.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import taskfleet
from taskfleet.brokers.fleet_store import FleetStore
from taskfleet.fleet.records import MISSED_HEARTBEATS, ChildState, WorkerRecord
from taskfleet.worker.log_throttle import LogThrottle
from taskfleet.worker.logging import get_logger

if TYPE_CHECKING:
    from taskfleet.worker.supervisor import Supervisor

log = get_logger("taskfleet.worker")

#: The worker event a record stands for (taskfleet.fleet.events.WORKER_EVENTS).
WorkerEventType = Literal["worker-online", "worker-heartbeat", "worker-offline"]
#: Called with ``(event type, record)`` for every record built.
RecordHook = Callable[[WorkerEventType, WorkerRecord], None]
ONLINE: WorkerEventType = "worker-online"
HEARTBEAT: WorkerEventType = "worker-heartbeat"
OFFLINE: WorkerEventType = "worker-offline"
#: How long ``Heartbeat.stop`` waits for a beat in progress (a broker call) before giving up on forgetting.
STOP_TIMEOUT_S = 5.0


def child_states(supervisor: Supervisor) -> tuple[ChildState, ...]:
    """One state per pool slot, by slot: the child's pid and the task it runs (``Progress.running_task``); a slot
    whose child is being replaced is idle with no pid."""
    children = dict(supervisor.children)  # one atomic copy: the main loop adds and removes children
    states = []
    for slot in sorted(set(range(supervisor.concurrency)) | set(children)):
        rec = children.get(slot)
        if rec is None:
            states.append(ChildState(slot=slot, pid=None))
            continue
        task = rec.progress.running_task()
        states.append(ChildState(slot=slot, pid=rec.process.pid, task_id=task.task_id if task else None,
                                 task=task.task if task else None, since=task.since if task else None))
    return tuple(states)


def worker_record(supervisor: Supervisor, *, worker: str, sent_at: float | None = None) -> WorkerRecord:
    """The record ``supervisor`` publishes as ``worker`` now (``sent_at``: Unix seconds, default now)."""
    settings = supervisor.settings
    return WorkerRecord(
        id=worker, app=supervisor.app.name, hostname=socket.gethostname(), pid=os.getpid(),
        queues=tuple(supervisor.queues), concurrency=supervisor.concurrency, version=taskfleet.__version__,
        started_at=supervisor.started_at, sent_at=time.time() if sent_at is None else sent_at,
        processed=supervisor.tally.processed, failed=supervisor.tally.failed, children=child_states(supervisor),
        pod=settings.pod, heartbeat_interval_s=settings.heartbeat_interval_s or 0.0, draining=supervisor.draining,
    )


class Heartbeat:
    """Publishes ``record()`` as ``worker`` every ``interval_s`` seconds on a daemon thread (module docstring)."""

    def __init__(self, *, worker: str, record: Callable[[], WorkerRecord], connect: Callable[[], FleetStore],
                 interval_s: float) -> None:
        self.worker = worker
        self.interval_s = interval_s
        #: The record's expiry: a worker that misses this many seconds of beats is gone.
        self.ttl_s = MISSED_HEARTBEATS * interval_s
        #: Called with every record built (module docstring); append before ``start``.
        self.on_record: list[RecordHook] = []
        self._record = record
        self._connect = connect
        self._store: FleetStore | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskfleet-heartbeat", daemon=True)
        self._errors = LogThrottle(log, "heartbeat not published; retrying")
        self._beats = 0

    def start(self) -> None:
        """Start beating; the first beat is published at once."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating, remove the worker's record from the store (a clean stop) and close the store. The last
        record goes to the hooks as ``worker-offline``."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():  # stuck in a broker call: the store is that thread's; the record will expire
            log.warning("heartbeat thread did not stop; the worker's record expires by itself", ttl_s=self.ttl_s)
            return
        try:
            self._notify(OFFLINE, self._record())
            self._connected().forget_worker(self.worker)
        except Exception as exc:  # noqa: BLE001 - a broker error at the stop: the record expires by itself
            log.warning("could not remove the worker's record; it expires by itself", error=str(exc),
                        ttl_s=self.ttl_s)
        finally:
            self._disconnect()

    def beat(self) -> None:
        """Publish one record now and pass it to the hooks (the thread's step; tests call it directly)."""
        record = self._record()
        try:
            self._connected().heartbeat(self.worker, record.to_json(), ttl_s=self.ttl_s)
            self._errors.recovered("heartbeat published again")
        except Exception as exc:  # noqa: BLE001 - whatever the broker does, the worker goes on; next beat retries
            self._errors.failed(exc)
            self._disconnect()
        self._notify(ONLINE if self._beats == 0 else HEARTBEAT, record)
        self._beats += 1

    def _run(self) -> None:
        while True:
            began = time.monotonic()  # beats are interval_s apart, however long a publish takes (up to interval_s)
            try:
                self.beat()
            except Exception:  # building the record failed (a bug): log it, keep the thread
                log.exception("heartbeat failed")
            if self._stop.wait(max(0.0, began + self.interval_s - time.monotonic())):
                return

    def _notify(self, kind: WorkerEventType, record: WorkerRecord) -> None:
        for hook in list(self.on_record):
            try:
                hook(kind, record)
            except Exception:  # a hook's bug must not stop heartbeats
                log.exception("heartbeat hook failed", hook=repr(hook), event_type=kind)

    def _connected(self) -> FleetStore:
        if self._store is None:
            self._store = self._connect()
        return self._store

    def _disconnect(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too; it is dropped either way
                log.debug("closing the heartbeat's fleet store failed")
