"""The read-only control commands (``taskfleet inspect ...``, ``app.control.inspect().<name>()``): what a worker
answers about itself, in Celery's shapes where Celery has one. Each is a ``Handler`` run on the supervisor's main
loop (taskfleet.worker.control_server), reading its state: the children's ``Progress`` (which task each runs) and
what they reported holding (``ChildRecord.held``).

- ``ping``: ``{"ok": "pong"}``.
- ``active``: per busy child, the task it runs: ``id``, ``name``, ``time_start`` (Unix seconds), ``worker_pid``,
  ``delivery_info`` (``routing_key``: the queue; ``redelivered``), ``delivery_count``, ``hostname`` (the worker id);
  ``args`` and ``kwargs`` are None: the supervisor never decodes a message (its child does).
- ``reserved``: messages children have fetched (prefetched) and not started: ``id`` (the task id), ``message_id``,
  ``delivery_info``, ``delivery_count``, ``worker_pid``. Deliveries that a child finished but whose ack is still
  batched are not listed.
- ``scheduled``: always ``[]``. A worker never holds a delayed (ETA, countdown) message: the broker keeps it until
  it is due (a delayed set, a delay queue, a column), so there is nothing a worker could list, unlike Celery, whose
  workers hold ETA tasks in memory. Look at the broker's delayed count (``taskfleet queues``) instead.
- ``registered``: the app's task names, sorted, without the builtin ones (``taskfleet.map``, ``taskfleet.starmap``,
  ``taskfleet.identity``) unless the arguments say ``{"builtins": true}``, as Celery leaves out ``celery.*``.
- ``stats``: Celery's keys where they apply (``pid``, ``uptime``, ``pool``, ``total``, ``prefetch_count``,
  ``broker``) and ours (``processed``, ``failed``, ``queues``, ``pod``, ``draining``...). The broker URL is masked.
- ``revoked``: ``[]`` here; the revoke commands keep the revoked ids and answer it themselves.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import taskfleet
from taskfleet.brokers.base import Delivery
from taskfleet.canvas.builtins import NAMES as BUILTIN_TASKS
from taskfleet.fleet.records import worker_id
from taskfleet.urls import mask_url, url_scheme
from taskfleet.worker.control_server import Handler

if TYPE_CHECKING:
    from taskfleet.worker.supervisor import Supervisor


def task_id_of(message_id: str) -> str:
    """The task id of a broker message id: the task id itself, or ``<task id>:<retries>`` for a retry
    (``Message.broker_id``)."""
    head, sep, tail = message_id.rpartition(":")
    return head if sep and tail.isdigit() else message_id


def _delivery_info(delivery: Delivery) -> dict[str, Any]:
    return {"routing_key": delivery.queue, "redelivered": delivery.delivery_count > 1}


def ping(supervisor: Supervisor, arguments: Mapping[str, Any]) -> dict[str, str]:
    return {"ok": "pong"}


def active(supervisor: Supervisor, arguments: Mapping[str, Any]) -> list[dict[str, Any]]:
    hostname = worker_id()
    out = []
    for rec in sorted(supervisor.children.values(), key=lambda r: r.slot):
        task = rec.progress.running_task()
        if task is None:
            continue
        delivery = rec.held.get(task.seq)
        out.append({
            "id": task.task_id, "name": task.task, "type": task.task, "args": None, "kwargs": None,
            "hostname": hostname, "time_start": task.since, "worker_pid": rec.process.pid,
            "message_id": delivery.message_id if delivery else None,
            "delivery_info": _delivery_info(delivery) if delivery else None,
            "delivery_count": delivery.delivery_count if delivery else None,
        })
    return out


def reserved(supervisor: Supervisor, arguments: Mapping[str, Any]) -> list[dict[str, Any]]:
    hostname = worker_id()
    out = []
    for rec in sorted(supervisor.children.values(), key=lambda r: r.slot):
        started = rec.progress.started  # deliveries run in sequence order: later ones have not started
        for seq, delivery in sorted(rec.held.items()):
            if seq <= started:
                continue
            out.append({
                "id": task_id_of(delivery.message_id), "message_id": delivery.message_id, "hostname": hostname,
                "worker_pid": rec.process.pid, "delivery_info": _delivery_info(delivery),
                "delivery_count": delivery.delivery_count,
            })
    return out


def scheduled(supervisor: Supervisor, arguments: Mapping[str, Any]) -> list[dict[str, Any]]:
    return []  # the broker holds delayed messages, never the worker (module docstring)


def registered(supervisor: Supervisor, arguments: Mapping[str, Any]) -> list[str]:
    builtins = bool(arguments.get("builtins", False))
    return sorted(name for name in supervisor.app.tasks if builtins or name not in BUILTIN_TASKS)


def stats(supervisor: Supervisor, arguments: Mapping[str, Any]) -> dict[str, Any]:
    settings = supervisor.settings
    url = supervisor.app.settings.broker_url or ""
    children = sorted(supervisor.children.values(), key=lambda r: r.slot)
    return {
        "pid": os.getpid(), "hostname": socket.gethostname(), "version": taskfleet.__version__,
        "uptime": round(time.time() - supervisor.started_at, 3),
        "pool": {
            "implementation": "prefork", "max-concurrency": supervisor.concurrency,
            "processes": [rec.process.pid for rec in children if rec.process.pid is not None],
            "max-tasks-per-child": settings.max_tasks_per_child,
            "max-memory-per-child-mb": settings.max_memory_per_child_mb,
        },
        "total": dict(supervisor.tally.by_task()), "processed": supervisor.tally.processed,
        "failed": supervisor.tally.failed,
        "queues": list(supervisor.queues),
        "prefetch_count": settings.prefetch * supervisor.concurrency, "prefetch_per_child": settings.prefetch,
        "broker": {"transport": url_scheme(url) if url else None, "url": mask_url(url) if url else None},
        "heartbeat_interval_s": settings.heartbeat_interval_s,
        "pod": dataclasses.asdict(settings.pod) if settings.pod is not None else None,
        "draining": supervisor.draining,
    }


def revoked(supervisor: Supervisor, arguments: Mapping[str, Any]) -> list[str]:
    return []  # the revoke commands keep the revoked ids and answer this themselves (module docstring)


HANDLERS: Mapping[str, Handler] = {
    "ping": ping, "active": active, "reserved": reserved, "scheduled": scheduled, "registered": registered,
    "stats": stats, "revoked": revoked,
}
