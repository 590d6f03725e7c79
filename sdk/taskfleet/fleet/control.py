"""``app.control``: Celery's remote-control client over the fleet store.

``app.control.inspect().active()`` asks every worker (or ``destination``) and returns ``{worker: answer}``, or None
when no worker answered within ``timeout`` seconds, as Celery does. Commands that change workers
(``rate_limit``, ``revoke``...) return the replies when ``reply=True``, else ``[]`` at once.

``revoke`` also stores the revocation (``FleetStore.add_revocations``), so a worker started later honours it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.errors import ControlError
from taskfleet.fleet.protocol import DEFAULT_TIMEOUT_S, ControlReply, ControlRequest, replies_by_worker
from taskfleet.fleet.records import WorkerRecord, decode_records
from taskfleet.fleet.revocations import DEFAULT_TERMINATE_SIGNAL, Revocation, signal_number

if TYPE_CHECKING:
    from taskfleet.app import App

Destination = str | Sequence[str] | None


def _destination(destination: Destination) -> tuple[str, ...] | None:
    if destination is None:
        return None
    return (destination,) if isinstance(destination, str) else tuple(destination)


class Control:
    """The fleet-control client of one app (``app.control``)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def store(self) -> FleetStore:
        """A new fleet store on the app's broker (the caller closes it)."""
        return connect_fleet_store(self.app.broker, namespace=self.app.name)

    # -- sending ---------------------------------------------------------------------------------------------------

    def broadcast(self, command: str, *, arguments: dict[str, Any] | None = None, destination: Destination = None,
                  reply: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
                  limit: int | None = None) -> list[ControlReply]:
        """Send ``command`` to the workers (``destination``: a worker id or ids; None: all). With ``reply``, wait up
        to ``timeout`` seconds for answers (or until ``limit``, default: one per destination) and return them;
        without, return ``[]`` at once. ``ControlError`` for an unknown command."""
        dest = _destination(destination)
        expected = limit if limit is not None else (len(dest) if dest is not None else None)
        store = self.store()
        try:
            if not reply:
                store.publish_control(ControlRequest(command, arguments or {}, dest).to_json())
                return []
            inbox = store.reply_inbox()
            try:
                request = ControlRequest(command, arguments or {}, dest, reply_to=inbox.address)
                store.publish_control(request.to_json())
                replies = []
                for raw in inbox.collect(timeout, expected=expected):
                    try:
                        answer = ControlReply.from_json(raw)
                    except ControlError:
                        continue
                    if answer.request_id == request.id:
                        replies.append(answer)
                return replies
            finally:
                inbox.close()
        finally:
            store.close()

    def inspect(self, destination: Destination = None, timeout: float = DEFAULT_TIMEOUT_S) -> Inspect:
        """Celery's ``app.control.inspect()``: read-only questions to the workers."""
        return Inspect(self, destination=destination, timeout=timeout)

    def ping(self, destination: Destination = None, timeout: float = DEFAULT_TIMEOUT_S) -> list[dict[str, Any]]:
        """Celery's ``app.control.ping()``: ``[{worker: {"ok": "pong"}}, ...]`` for the workers that answered."""
        return [{r.worker: r.result} for r in self.broadcast("ping", destination=destination, reply=True,
                                                              timeout=timeout)]

    # -- revoke ----------------------------------------------------------------------------------------------------

    def revoke(self, task_id: str | Iterable[str], *, terminate: bool = False,
               signal: str = DEFAULT_TERMINATE_SIGNAL, expires_s: float | None = None,
               destination: Destination = None, reply: bool = False,
               timeout: float = DEFAULT_TIMEOUT_S) -> list[ControlReply]:
        """Revoke task ids: a queued or delayed one never runs and ends REVOKED; with ``terminate``, a running one's
        child gets ``signal`` (then SIGKILL after a grace). Stored for ``expires_s`` (default: the app's
        ``result_expires_s``) so that workers started later honour it, and sent to the running workers now."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        if not ids:
            return []
        signal_number(signal)  # a bad name fails here, not in every worker
        expires_at = time.time() + (expires_s if expires_s is not None else self.app.settings.result_expires_s)
        store = self.store()
        try:
            store.add_revocations([Revocation(i, expires_at, terminate=terminate, signal=signal) for i in ids])
        finally:
            store.close()
        return self.broadcast("revoke", arguments={"task_ids": ids, "terminate": terminate, "signal": signal,
                                                   "expires_at": expires_at},
                              destination=destination, reply=reply, timeout=timeout)

    # -- runtime limits, consumers, pool ---------------------------------------------------------------------------

    def rate_limit(self, task_name: str, rate_limit: str | None, *, destination: Destination = None,
                   reply: bool = False, timeout: float = DEFAULT_TIMEOUT_S) -> list[ControlReply]:
        """Set ``task_name``'s rate limit on the workers (``"10/s"``, ``"100/m"``, ``"1000/h"``; None or ``""``:
        none). Per worker, as in Celery; it lasts until the worker stops."""
        return self.broadcast("rate_limit", arguments={"task_name": task_name, "rate_limit": rate_limit or None},
                              destination=destination, reply=reply, timeout=timeout)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None, *,
                   destination: Destination = None, reply: bool = False,
                   timeout: float = DEFAULT_TIMEOUT_S) -> list[ControlReply]:
        """Set ``task_name``'s soft and hard time limits (seconds; None: none) on the workers."""
        return self.broadcast("time_limit", arguments={"task_name": task_name, "soft": soft, "hard": hard},
                              destination=destination, reply=reply, timeout=timeout)

    def add_consumer(self, queue: str, *, destination: Destination = None, reply: bool = False,
                     timeout: float = DEFAULT_TIMEOUT_S) -> list[ControlReply]:
        """Make the workers consume ``queue`` too."""
        return self.broadcast("add_consumer", arguments={"queue": queue}, destination=destination, reply=reply,
                              timeout=timeout)

    def cancel_consumer(self, queue: str, *, destination: Destination = None, reply: bool = False,
                        timeout: float = DEFAULT_TIMEOUT_S) -> list[ControlReply]:
        """Make the workers stop consuming ``queue`` (a worker keeps at least one queue)."""
        return self.broadcast("cancel_consumer", arguments={"queue": queue}, destination=destination, reply=reply,
                              timeout=timeout)

    def pool_grow(self, n: int = 1, *, destination: Destination = None, reply: bool = False,
                  timeout: float = DEFAULT_TIMEOUT_S) -> list[ControlReply]:
        """Add ``n`` children to each worker's pool."""
        return self.broadcast("pool_grow", arguments={"n": n}, destination=destination, reply=reply,
                              timeout=timeout)

    def pool_shrink(self, n: int = 1, *, destination: Destination = None, reply: bool = False,
                    timeout: float = DEFAULT_TIMEOUT_S) -> list[ControlReply]:
        """Remove ``n`` children from each worker's pool (idle ones first; never below one)."""
        return self.broadcast("pool_shrink", arguments={"n": n}, destination=destination, reply=reply,
                              timeout=timeout)

    def shutdown(self, *, destination: Destination = None, reply: bool = False,
                 timeout: float = DEFAULT_TIMEOUT_S) -> list[ControlReply]:
        """Drain and stop the workers, as SIGTERM does (an orchestrator may start them again)."""
        return self.broadcast("shutdown", destination=destination, reply=reply, timeout=timeout)

    # -- the registry ----------------------------------------------------------------------------------------------

    def workers(self) -> list[WorkerRecord]:
        """The live workers' latest heartbeat records (malformed ones skipped), by worker id."""
        store = self.store()
        try:
            raw = store.workers()
        finally:
            store.close()
        return sorted(decode_records(raw), key=lambda r: r.id)


class Inspect:
    """Celery's ``Inspect``: each method asks the workers and returns ``{worker: answer}``, or None when none
    answered within the timeout."""

    def __init__(self, control: Control, *, destination: Destination = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _ask(self, command: str) -> dict[str, Any] | None:
        replies = self.control.broadcast(command, destination=self.destination, reply=True, timeout=self.timeout)
        return replies_by_worker(replies) or None

    def ping(self) -> dict[str, Any] | None:
        return self._ask("ping")

    def active(self) -> dict[str, Any] | None:
        return self._ask("active")

    def reserved(self) -> dict[str, Any] | None:
        return self._ask("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        return self._ask("scheduled")

    def registered(self) -> dict[str, Any] | None:
        return self._ask("registered")

    def stats(self) -> dict[str, Any] | None:
        return self._ask("stats")

    def revoked(self) -> dict[str, Any] | None:
        return self._ask("revoked")
