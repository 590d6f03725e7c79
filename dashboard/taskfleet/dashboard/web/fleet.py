"""The live side of the dashboard: the broker's queues and dead letters, the workers registry, and the control
commands, on one ``App``. Answers are plain JSON-ready dicts, with no URL, password or message body in them.

The app's broker is one connection: calls are serialised with a lock (the web server runs sync endpoints on a
thread pool).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from taskfleet.app import App
from taskfleet.errors import TaskfleetError
from taskfleet.fleet.protocol import ControlReply
from taskfleet.fleet.records import WorkerRecord
from taskfleet.urls import mask_secrets

T = TypeVar("T")
#: How long an action waits for the workers' replies, in seconds.
ACTION_REPLY_TIMEOUT_S = 1.0
DEAD_LETTERS_LIMIT = 100


class FleetError(Exception):
    """A broker or control call failed; the message is safe to show (passwords masked)."""


class Fleet:
    """Reads and steers one app's fleet."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._lock = threading.Lock()

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            with self._lock:
                return fn()
        except TaskfleetError as exc:
            raise FleetError(mask_secrets(str(exc))) from exc

    # -- reading ---------------------------------------------------------------------------------------------------

    def queues(self) -> list[dict[str, Any]]:
        """Every queue the broker knows, with its counts (``None`` where the broker cannot count)."""
        def read() -> list[dict[str, Any]]:
            broker = self.app.broker
            rows = []
            for name in broker.queues():
                d = broker.queue_depth(name)
                rows.append({"queue": name, "ready": d.ready + d.due,
                             "in_flight": d.in_flight if d.in_flight_known else None,
                             "delayed": d.delayed if d.delayed_known else None, "dead": d.dead})
            return rows
        return self._call(read)

    def dead_letters(self, queue: str, *, limit: int = DEAD_LETTERS_LIMIT) -> list[dict[str, Any]]:
        """A queue's dead letters, oldest first: id, reason and when (the body is not shown: it may hold secrets
        the task's args would have been cut from)."""
        letters = self._call(lambda: self.app.broker.dead_letters(queue, limit=limit))
        return [{"queue": d.queue, "message_id": d.message_id, "reason": mask_secrets(d.reason),
                 "dead_at": d.dead_at, "size_bytes": len(d.data)} for d in letters]

    def workers(self) -> list[dict[str, Any]]:
        """The live workers (their heartbeat records still in the broker), by id."""
        records = self._call(self.app.control.workers)
        now = time.time()
        return [worker_json(r, now=now) for r in records]

    # -- acting ----------------------------------------------------------------------------------------------------

    def requeue(self, queue: str, message_ids: list[str] | None) -> dict[str, Any]:
        n = self._call(lambda: self.app.broker.requeue_dead_letters(queue, message_ids=message_ids))
        return {"ok": True, "queue": queue, "requeued": n}

    def purge(self, queue: str) -> dict[str, Any]:
        n = self._call(lambda: self.app.broker.purge(queue))
        return {"ok": True, "queue": queue, "purged": n}

    def revoke(self, task_id: str, *, terminate: bool) -> dict[str, Any]:
        replies = self._call(lambda: self.app.control.revoke(task_id, terminate=terminate, reply=True,
                                                             timeout=ACTION_REPLY_TIMEOUT_S))
        return {"ok": True, "task_id": task_id, "terminate": terminate, "replies": replies_json(replies)}

    def rate_limit(self, task_name: str, rate: str | None, worker: str | None) -> dict[str, Any]:
        replies = self._call(lambda: self.app.control.rate_limit(task_name, rate, destination=worker, reply=True,
                                                                 timeout=ACTION_REPLY_TIMEOUT_S))
        return {"ok": True, "task_name": task_name, "rate_limit": rate, "replies": replies_json(replies)}

    def pool(self, *, grow: bool, n: int, worker: str | None) -> dict[str, Any]:
        control = self.app.control
        command = control.pool_grow if grow else control.pool_shrink
        replies = self._call(lambda: command(n, destination=worker, reply=True, timeout=ACTION_REPLY_TIMEOUT_S))
        return {"ok": True, "grow" if grow else "shrink": n, "replies": replies_json(replies)}


def worker_json(record: WorkerRecord, *, now: float) -> dict[str, Any]:
    """One live worker as the API shows it (Unix seconds; ``age_s``: since its last heartbeat)."""
    return {
        "id": record.id, "hostname": record.hostname, "pid": record.pid,
        "pod": f"{record.pod.namespace}/{record.pod.name}" if record.pod else None,
        "queues": list(record.queues), "busy": record.busy, "concurrency": record.concurrency,
        "processed": record.processed, "failed": record.failed, "draining": record.draining,
        "version": record.version, "started_at": record.started_at, "sent_at": record.sent_at,
        "age_s": max(0.0, now - record.sent_at),
        "children": [{"slot": c.slot, "pid": c.pid, "task_id": c.task_id, "task": c.task, "since": c.since}
                     for c in record.children],
    }


def replies_json(replies: list[ControlReply]) -> dict[str, Any]:
    """``{worker: {"ok", "result", "error"}}`` of a control command's replies."""
    return {r.worker: {"ok": r.ok, "result": r.result, "error": r.error} for r in replies}
