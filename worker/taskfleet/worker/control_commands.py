"""The control commands that change a worker (``app.control.revoke``, ``rate_limit``, ``time_limit``,
``add_consumer``, ``cancel_consumer``, ``pool_grow``, ``pool_shrink``, ``shutdown``), by name.

The worker's control server runs each handler in the supervisor's main thread with the request's arguments (as
``app.control`` sends them, taskfleet.fleet.control) and replies with what it returns; a handler raises
``ControlError`` for bad arguments, and the reply says ``ok=False`` with its text. Replies are Celery's
(``{"ok": "rate limit set successfully"}``). The mechanisms are the supervisor's ``steering``
(taskfleet.worker.steering).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from taskfleet.errors import ConfigurationError, ControlError
from taskfleet.fleet.revocations import DEFAULT_TERMINATE_SIGNAL, Revocation, signal_number
from taskfleet.rates import parse_rate
from taskfleet.settings import validate_queue_name
from taskfleet.worker.task_limits import check_time_limits

if TYPE_CHECKING:
    from taskfleet.worker.supervisor import Supervisor

Handler = Callable[["Supervisor", Mapping[str, Any]], Any]


def _task_name(sup: Supervisor, args: Mapping[str, Any]) -> str:
    name = args.get("task_name")
    if not isinstance(name, str) or not name:
        raise ControlError("task_name must be a task's name")
    if name not in sup.app.tasks:
        raise ControlError(f"unknown task {name!r}")
    return name


def _count(args: Mapping[str, Any]) -> int:
    n = args.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ControlError(f"n must be a whole number >= 1, got {n!r}")
    return n


def _queue(args: Mapping[str, Any]) -> str:
    queue = args.get("queue")
    if not isinstance(queue, str):
        raise ControlError("queue must be a queue name")
    try:
        validate_queue_name(queue)
    except ConfigurationError as exc:
        raise ControlError(str(exc)) from exc
    return queue


def revoke(sup: Supervisor, args: Mapping[str, Any]) -> dict[str, Any]:
    """Revoke ``task_ids`` until ``expires_at`` (Unix seconds; default: the result expiry from now); with
    ``terminate``, terminate the ones running here with ``signal``."""
    ids = args.get("task_ids")
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ControlError("task_ids must be a list of task ids")
    terminate = args.get("terminate", False)
    if not isinstance(terminate, bool):
        raise ControlError("terminate must be true or false")
    signal_name = args.get("signal") or DEFAULT_TERMINATE_SIGNAL
    if not isinstance(signal_name, str | int):
        raise ControlError("signal must be a signal name or number")
    signal_number(signal_name)  # ControlError for a bad one
    expires_at = args.get("expires_at")
    if expires_at is None:
        expires_at = time.time() + sup.app.settings.result_expires_s
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise ControlError("expires_at must be Unix seconds")
    revocations = [Revocation(i, float(expires_at), terminate=terminate, signal=str(signal_name)) for i in ids]
    terminated = sup.steering.revoke(revocations)
    return {"ok": f"tasks {', '.join(ids)} flagged as revoked", "terminated": terminated}


def rate_limit(sup: Supervisor, args: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``task_name``'s rate limit (``"10/s"``...; None or ``""``: none) in this worker."""
    name = _task_name(sup, args)
    text = args.get("rate_limit")
    if text is not None and not isinstance(text, str | int | float):
        raise ControlError("rate_limit must be like '10/s', '100/m', '1000/h', or null")
    try:
        rate = parse_rate(text)
    except ConfigurationError as exc:
        raise ControlError(str(exc)) from exc
    sup.steering.set_rate_limit(name, None if rate is None else str(text))
    if rate is None:
        return {"ok": "rate limit disabled successfully"}
    return {"ok": "rate limit set successfully"}


def time_limit(sup: Supervisor, args: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``task_name``'s ``soft`` and ``hard`` time limits (seconds; None: none) in this worker."""
    name = _task_name(sup, args)
    try:
        soft_s, hard_s = check_time_limits(args.get("soft"), args.get("hard"))
    except ValueError as exc:
        raise ControlError(str(exc)) from exc
    sup.steering.set_time_limits(name, soft_s, hard_s)
    return {"ok": "time limits set successfully"}


def add_consumer(sup: Supervisor, args: Mapping[str, Any]) -> dict[str, Any]:
    """Consume ``queue`` too."""
    queue = _queue(args)
    if queue in sup.queues:
        return {"ok": f"already consuming from {queue!r}"}
    sup.steering.set_queues((*sup.queues, queue))
    return {"ok": f"add consumer {queue}"}


def cancel_consumer(sup: Supervisor, args: Mapping[str, Any]) -> dict[str, Any]:
    """Stop consuming ``queue``; the last queue cannot be cancelled."""
    queue = _queue(args)
    if queue not in sup.queues:
        raise ControlError(f"not consuming from {queue!r}")
    if len(sup.queues) == 1:
        raise ControlError(f"{queue!r} is this worker's only queue: a worker keeps at least one")
    sup.steering.set_queues(tuple(q for q in sup.queues if q != queue))
    return {"ok": f"no longer consuming from {queue}"}


def pool_grow(sup: Supervisor, args: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``n`` children."""
    if sup.draining:
        raise ControlError("the worker is shutting down")
    size = sup.steering.grow(_count(args))
    return {"ok": f"pool will grow to {size}", "concurrency": size}


def pool_shrink(sup: Supervisor, args: Mapping[str, Any]) -> dict[str, Any]:
    """Remove ``n`` children (idle ones first), keeping at least one."""
    n = _count(args)
    if sup.concurrency <= 1:
        raise ControlError("the pool has one child: it cannot shrink")
    size = sup.steering.shrink(n)
    return {"ok": f"pool will shrink to {size}", "concurrency": size}


def shutdown(sup: Supervisor, args: Mapping[str, Any]) -> dict[str, Any]:
    """Drain and stop, as SIGTERM does."""
    sup.stop()
    return {"ok": "shutting down"}


HANDLERS: Mapping[str, Handler] = {
    "revoke": revoke,
    "rate_limit": rate_limit,
    "time_limit": time_limit,
    "add_consumer": add_consumer,
    "cancel_consumer": cancel_consumer,
    "pool_grow": pool_grow,
    "pool_shrink": pool_shrink,
    "shutdown": shutdown,
}
