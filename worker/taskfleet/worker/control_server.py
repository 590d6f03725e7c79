"""The worker's control server: the requests of ``taskfleet inspect``, ``taskfleet control`` and ``app.control``
(taskfleet.fleet.protocol), received on a thread of the supervisor and carried out on its main loop.

A thread holds a ``ControlListener`` on a fleet store of its own (a store is not thread-safe) and decodes what
arrives. Bytes that are not a request are logged (a warning with a short excerpt, never the whole payload) and
dropped; a request for other workers, or older than ``MAX_REQUEST_AGE_S`` (its client stopped waiting long ago), is
ignored. The rest go to the supervisor's main loop (``Supervisor.call_soon``), which runs the command's handler
there, the one thread that owns the supervisor's state, and hands the reply back to this thread, which sends it
(``FleetStore.reply``) when the request names a ``reply_to``. A handler that raises ``ControlError`` (bad
arguments, a refused change) answers ``ok=False`` with its text; any other exception is a bug: logged with its
traceback and answered ``ok=False``, and the worker goes on. When the broker fails, the thread logs it (rate-limited)
and reconnects; requests published meanwhile are not delivered (control is pub/sub: the client sees no reply).

Handlers (``Handler``: ``(supervisor, arguments) -> result``, a JSON-able result) come from
``taskfleet.worker.inspect_commands`` (read-only) and ``taskfleet.worker.control_commands`` (changes: revoke,
limits, consumers, pool, shutdown); a known command without a handler answers "not supported by this worker".
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Mapping
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, TypeAlias

from taskfleet.brokers.fleet_store import ControlListener, FleetStore
from taskfleet.errors import ControlError
from taskfleet.fleet.protocol import MAX_REQUEST_AGE_S, ControlReply, ControlRequest
from taskfleet.worker.log_throttle import LogThrottle
from taskfleet.worker.logging import get_logger

if TYPE_CHECKING:
    from taskfleet.worker.supervisor import Supervisor

log = get_logger("taskfleet.worker")

#: Carries out one command on the supervisor's main loop: ``(supervisor, request arguments) -> result``. Raise
#: ``ControlError`` for bad arguments or a refused change (the reply says ``ok=False`` with its text).
Handler: TypeAlias = Callable[["Supervisor", Mapping[str, Any]], Any]

#: How long one ``ControlListener.receive`` waits: replies wait for it to return, so this bounds their latency.
POLL_S = 0.1
#: After a broker error, the wait before reconnecting (doubled per failure up to the max).
RECONNECT_S, RECONNECT_MAX_S = 0.5, 5.0
#: How many bytes of a message that does not parse are logged.
EXCERPT_BYTES = 120
#: How long ``ControlServer.stop`` waits for the thread (in a broker call at worst).
STOP_TIMEOUT_S = 5.0


def handler_table() -> dict[str, Handler]:
    """Every command's handler. Imported here rather than at the top: the command modules import ``Handler``."""
    from taskfleet.worker import inspect_commands

    tables: list[Mapping[str, Handler]] = [inspect_commands.HANDLERS]
    # The control commands (revoke, rate_limit... : taskfleet.worker.control_commands) join the table here, after
    # the inspect ones (a later table wins, e.g. for ``revoked``).
    return {name: handler for table in tables for name, handler in table.items()}


def excerpt(raw: bytes) -> str:
    """The start of ``raw`` for a log line: ``EXCERPT_BYTES`` at most, as a ``repr``."""
    return repr(raw[:EXCERPT_BYTES]) + ("..." if len(raw) > EXCERPT_BYTES else "")


class ControlServer:
    """Receives control requests for ``worker`` and has ``supervisor``'s main loop carry them out (module
    docstring). ``submit`` hands work to that loop (default: ``supervisor.call_soon``)."""

    def __init__(self, *, worker: str, supervisor: Supervisor, connect: Callable[[], FleetStore],
                 handlers: Mapping[str, Handler] | None = None,
                 submit: Callable[[Callable[[], None]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.worker = worker
        self.supervisor = supervisor
        self.handlers: Mapping[str, Handler] = handler_table() if handlers is None else handlers
        #: Set while a listener is open: requests published from then on reach this worker.
        self.listening = threading.Event()
        self._connect = connect
        self._submit = submit if submit is not None else supervisor.call_soon
        self._clock = clock
        self._replies: SimpleQueue[tuple[str, ControlReply]] = SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskfleet-control", daemon=True)
        self._errors = LogThrottle(log, "control server lost the broker; reconnecting")

    def start(self) -> None:
        self._thread.start()

    def wait_listening(self, timeout_s: float) -> bool:
        """Wait until the listener is open (requests published from then on are received); False on timeout."""
        return self.listening.wait(timeout_s)

    def stop(self) -> None:
        """Stop receiving, close the listener and the store (replies not sent yet are dropped)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(STOP_TIMEOUT_S)

    # -- the control thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        store: FleetStore | None = None
        listener: ControlListener | None = None
        wait_s = RECONNECT_S
        while not self._stop.is_set():
            try:
                if listener is None:
                    store = self._connect()
                    listener = store.control_listener(self.worker)
                    self.listening.set()
                    self._errors.recovered("control server reconnected")
                    wait_s = RECONNECT_S
                for raw in listener.receive(POLL_S):
                    self.accept(raw)
                self._send_replies(store)
            except Exception as exc:  # noqa: BLE001 - a broker error (or a store's bug): reconnect, never stop
                self._errors.failed(exc)
                self.listening.clear()
                _close(listener, store)
                store, listener = None, None
                self._stop.wait(wait_s)
                wait_s = min(RECONNECT_MAX_S, wait_s * 2)
        self.listening.clear()
        _close(listener, store)

    def accept(self, raw: bytes) -> None:
        """Decode one received message and hand it to the main loop if it is a live request for this worker."""
        try:
            request = ControlRequest.from_json(raw)
        except Exception as exc:  # noqa: BLE001 - ControlError, or anything odd bytes provoke: drop, go on
            log.warning("control message dropped: not a valid request", error=str(exc), size=len(raw),
                        excerpt=excerpt(raw))
            self._refuse(raw, str(exc))
            return
        if not request.addressed_to(self.worker):
            return
        age_s = self._clock() - request.sent_at
        if age_s > MAX_REQUEST_AGE_S:
            log.info("control request ignored: too old", command=request.command, request_id=request.id,
                     age_s=round(age_s, 1), max_age_s=MAX_REQUEST_AGE_S)
            return
        self._submit(functools.partial(self.serve, request))

    def _refuse(self, raw: bytes, error: str) -> None:
        """Answer a request that names a reply address but could not be decoded (an unknown command from a newer
        client, say), so its client learns why rather than waiting out its timeout."""
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        request_id, reply_to, destination = data.get("id"), data.get("reply_to"), data.get("destination")
        addressed = destination is None or (isinstance(destination, list) and self.worker in destination)
        if isinstance(request_id, str) and isinstance(reply_to, str) and addressed:
            self._replies.put((reply_to, ControlReply(request_id, self.worker, ok=False, error=error)))

    def _send_replies(self, store: FleetStore | None) -> None:
        while store is not None:
            try:
                address, reply = self._replies.get_nowait()
            except Empty:
                return
            try:
                data = reply.to_json()
            except (TypeError, ValueError) as exc:  # a handler returned what JSON cannot hold
                log.error("control reply could not be encoded", request_id=reply.request_id, error=str(exc))
                data = ControlReply(reply.request_id, self.worker, ok=False,
                                    error=f"the worker's answer could not be encoded: {exc}").to_json()
            store.reply(address, data)

    # -- the supervisor's main loop --------------------------------------------------------------------------------

    def serve(self, request: ControlRequest) -> None:
        """Run ``request``'s handler (on the supervisor's main loop) and queue its reply for the control thread."""
        handler = self.handlers.get(request.command)
        log.debug("control request", command=request.command, request_id=request.id)
        try:
            if handler is None:
                raise ControlError(f"{request.command!r} is not supported by this worker")
            reply = ControlReply(request.id, self.worker, ok=True, result=handler(self.supervisor, request.arguments))
        except ControlError as exc:
            reply = ControlReply(request.id, self.worker, ok=False, error=str(exc))
        except Exception as exc:  # a handler's bug: answered and logged, the worker goes on
            log.exception("control command failed", command=request.command, request_id=request.id)
            reply = ControlReply(request.id, self.worker, ok=False, error=f"{type(exc).__name__}: {exc}")
        if request.reply_to is not None:
            self._replies.put((request.reply_to, reply))


def _close(listener: ControlListener | None, store: FleetStore | None) -> None:
    for closable in (listener, store):
        if closable is not None:
            try:
                closable.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too; it is dropped either way
                log.debug("closing the control server's listener or store failed")

