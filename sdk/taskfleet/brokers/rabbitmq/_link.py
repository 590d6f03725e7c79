"""One pika connection shared by the threads of a process: the way to use pika safely from several threads.

pika's ``BlockingConnection`` is not thread-safe, and it answers heartbeats only while some thread is inside pika.
So one thread at a time *drives* the connection, the one holding the link's I/O lock:

- a thread that needs the connection (``call``, ``submit``, ``take``) takes the lock when it is free and does its
  work itself: a publish waits for its confirm, a fetch waits for deliveries, with no hand-off to another thread
  (two thread wake-ups per operation, which cost more than RabbitMQ's own round trip on a busy machine);
- while the lock is taken, other threads queue their work and wake the driving thread, which runs it in order;
- a daemon I/O thread pumps the connection every ``PUMP_S`` when nobody else does (heartbeats keep flowing while a
  task runs for an hour) and runs work queued meanwhile.

Consumer deliveries land in a buffer that ``take`` reads.

The connection is opened on first use and again after it drops (lazily, by the next ``call``). Every (re)connect
starts a new *generation*: deliveries of an older generation can no longer be acked (RabbitMQ has already put them
back in their queues), and consumers must be started again.

Publishing goes through ``ConfirmPublisher``: a batch is written out whole and its confirms are awaited once, rather
than one round trip per message. Windowed publishes (``delay`` in ``windowed`` confirm mode) are not waited for at
all: the link's ``ConfirmWindow`` keeps them until confirmed, across connections; when a connection is lost with
some outstanding, the I/O thread reconnects and publishes them again (``resend``), within ``PUMP_S``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from taskfleet.brokers.rabbitmq._publisher import ConfirmPublisher
from taskfleet.brokers.rabbitmq._window import ConfirmWindow
from taskfleet.errors import BrokerConnectionError, BrokerError
from taskfleet.urls import mask_secrets, mask_url

T = TypeVar("T")

#: AMQP heartbeat: a dead peer is noticed within about two of these.
HEARTBEAT_S = 30
#: How often the I/O thread pumps a connection nobody else drives (heartbeats, buffering deliveries); queued calls
#: wake it at once.
PUMP_S = 0.5
#: Errors that mean the connection is gone (the next call reconnects).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.StreamLostError,
    OSError,
)

# pika logs every failed connection attempt at ERROR, with a traceback, several lines each, while this link already
# raises BrokerConnectionError (which the worker logs once, with the masked URL). Quiet pika unless the user chose
# a level for it.
if logging.getLogger("pika").level == logging.NOTSET:
    logging.getLogger("pika").setLevel(logging.CRITICAL)


class RawDelivery(NamedTuple):
    """A message pushed to one of this link's consumers. A named tuple: immutable, and built per delivery about five
    times faster than a frozen dataclass (whose ``__init__`` goes through ``object.__setattr__``)."""

    generation: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes


class Channels:
    """The channels of one connection: ``publisher`` (pipelined, confirm mode), ``consume`` (consumers and their
    acks) and ``admin`` (declares and inspection, whose errors close only that channel). Used only by the thread
    driving the connection."""

    def __init__(self, connection: BlockingConnection, generation: int, window: ConfirmWindow | None = None) -> None:
        self.connection = connection
        self.generation = generation
        self.window = window
        self.consume: BlockingChannel = connection.channel()
        self._publisher: ConfirmPublisher | None = None
        self._admin: BlockingChannel | None = None

    @property
    def publisher(self) -> ConfirmPublisher:
        if self._publisher is None or not self._publisher.is_open:
            self._publisher = ConfirmPublisher(self.connection, self.window)
        return self._publisher

    @property
    def admin(self) -> BlockingChannel:
        if self._admin is None or not self._admin.is_open:
            self._admin = self.connection.channel()
        return self._admin


class AmqpLink:
    """A connection to one RabbitMQ URL, driven by whichever thread holds its I/O lock (see the module notes).
    Thread-safe; not shared across ``fork()`` (make a new one in the child)."""

    def __init__(self, url: str, *, socket_timeout_s: float, name: str = "taskfleet",
                 confirm_window: int = 1000) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        self.socket_timeout_s = socket_timeout_s
        self.name = name
        self.generation = 0
        self._params = _parameters(url, socket_timeout_s=socket_timeout_s, name=name)
        #: Held by the one thread that drives pika at a time: a caller running its own work, or the I/O thread.
        self._io = threading.Lock()
        self._calls: queue.SimpleQueue[tuple[Callable[[Channels], Any], Future[Any]]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the I/O thread's start and ``_closed``
        self._incoming: deque[RawDelivery] = deque()  # touched only under ``_io``
        self._channels: Channels | None = None
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._closed = False
        self._on_socket: Callable[[int], None] | None = None
        #: Windowed publishes not confirmed yet (touched only by the thread driving the connection).
        self.window = ConfirmWindow(confirm_window)
        #: Publishes the window's orphans on a new connection (set by the broker, which declares their queues first);
        #: the I/O thread calls it while there are orphans.
        self.resend: Callable[[Channels], None] | None = None

    # -- used by any thread ------------------------------------------------------------------------------------

    def call(self, fn: Callable[[Channels], T], *, action: str, timeout_s: float | None = None) -> T:
        """Run ``fn(channels)`` (connecting first if needed) after anything submitted or called before, and return
        its result: in this thread when the connection is free, else by whichever thread drives it. A lost or
        unreachable connection raises ``BrokerConnectionError``; a channel closed by the broker ``BrokerError``."""
        if self._closed:
            raise BrokerError(f"rabbitmq broker {self.masked_url}: used after close()")
        if os.getpid() != self._owner_pid:
            raise BrokerError("a RabbitMQ connection cannot be used across fork(); open a new broker in the child")
        self._ensure_thread()
        if self._io.acquire(blocking=False):
            try:
                self._run_calls()
                return self._invoke(fn)
            finally:
                self._io.release()
        future: Future[T] = Future()
        self._calls.put((fn, future))
        self._poke()
        limit = timeout_s if timeout_s is not None else max(30.0, self.socket_timeout_s * 3)
        try:
            return future.result(timeout=limit)
        except FutureTimeout as exc:
            future.cancel()
            raise BrokerConnectionError(
                f"rabbitmq broker {self.masked_url} did not answer {action} within {limit:.0f}s"
            ) from exc

    def submit(self, fn: Callable[[Channels], object]) -> None:
        """Run ``fn(channels)`` without waiting for it if the connection is busy (after anything submitted or called
        before). For acks: a lost one only means a redelivery."""
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._ensure_thread()
        self._calls.put((fn, Future()))
        if self._io.acquire(blocking=False):
            try:
                self._run_calls()
            finally:
                self._io.release()
        else:
            self._poke()

    def take(self, max_messages: int, timeout_s: float) -> tuple[int, list[RawDelivery]]:
        """Up to ``max_messages`` consumer deliveries, waiting up to ``timeout_s`` for the first: this thread
        drives the connection meanwhile (running other threads' calls as they come). Returns the current generation
        too, so a caller can tell that the connection was lost while it waited."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        if not self._io.acquire(timeout=max(0.0, timeout_s)):
            return self.generation, []
        try:
            generation = self.generation
            # Read the socket at least once, even with deliveries buffered: it takes in what has arrived since (a
            # fuller batch) and notices a lost connection, whose buffered deliveries RabbitMQ has already given back
            # (void, not to be returned). pika's first pump only dispatches deliveries another operation read (a
            # publish waiting for its confirm, say) when it has any, so it pumps again then.
            buffered = len(self._incoming)
            if self._pump(generation, 0.0) and len(self._incoming) > buffered:
                self._pump(generation, 0.0)
            while not self._incoming and not self._closed and (remaining := deadline - time.monotonic()) > 0:
                if not self._pump(generation, remaining):
                    break
            taken = [self._incoming.popleft() for _ in range(min(max_messages, len(self._incoming)))]
            return self.generation, taken
        finally:
            self._io.release()

    def take_buffered(self, max_messages: int, *, read_socket: bool = True) -> tuple[int, list[RawDelivery]]:
        """Up to ``max_messages`` consumer deliveries that have arrived, without waiting: when no other thread
        drives the connection, read the socket once first (what RabbitMQ has pushed since, no round trip); when one
        does, nothing (it buffers or takes them itself). With ``read_socket=False``, only what has been read off
        the socket already: the buffer, and deliveries pika read during another operation (a publish waiting for
        its confirm, a declare) and holds undispatched, which only a pump dispatches; with neither there, no system
        call. Returns the current generation too, like ``take``."""
        if self._closed or os.getpid() != self._owner_pid:
            return self.generation, []
        # Read without ``_io`` (a deque's length is safe to read): one appended meanwhile is by the thread driving
        # the connection, which then takes it or leaves it for the next take.
        if not read_socket and not self._incoming and not _undispatched(self._channels):
            return self.generation, []
        if not self._io.acquire(blocking=False):
            return self.generation, []
        try:
            generation = self.generation
            buffered = len(self._incoming)
            if self._pump(generation, 0.0) and len(self._incoming) > buffered:
                self._pump(generation, 0.0)  # see ``take``: dispatch what another operation read
            taken = [self._incoming.popleft() for _ in range(min(max_messages, len(self._incoming)))]
            return self.generation, taken
        finally:
            self._io.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection and stop the I/O thread. Unacked deliveries go back to their queues."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._poke()
        if thread is not None and thread is not threading.current_thread() and os.getpid() == self._owner_pid:
            thread.join(timeout=self.socket_timeout_s)

    def watch_sockets(self, hand_over: Callable[[int], None]) -> None:
        """Call ``hand_over(fd)`` with the socket of every connection this link opens from now on (and of the open
        one), before anything is consumed on it. A worker child hands its socket to its supervisor this way, so
        that RabbitMQ takes the child's deliveries back when the supervisor has settled what it knows of them
        (``Broker.watch_connections``)."""
        self._on_socket = hand_over
        channels = self._channels
        if channels is not None and (fd := socket_fd(channels.connection)) is not None:
            hand_over(fd)

    # -- used by the thread driving the connection (inside ``call``) -------------------------------------------

    def on_message(self, channel: BlockingChannel, method: Any, properties: pika.BasicProperties,
                   body: bytes) -> None:
        """Consumer callback (pass it to ``basic_consume``): buffer the delivery for ``take``."""
        self._incoming.append(RawDelivery(self.generation, method.consumer_tag, method.delivery_tag,
                                          bool(method.redelivered), properties, body))

    def drain_buffer(self) -> list[RawDelivery]:
        """Remove and return every buffered delivery (to give them back)."""
        taken = list(self._incoming)
        self._incoming.clear()
        return taken

    # -- driving the connection --------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="taskfleet-amqp", daemon=True)
                self._thread.start()

    def _poke(self) -> None:
        """Wake the I/O thread and whichever thread is waiting inside pika, so a queued call runs at once."""
        self._wake.set()
        channels = self._channels
        if channels is not None:
            with contextlib.suppress(Exception):  # a closing connection refuses; the event covers that case
                channels.connection.add_callback_threadsafe(_nothing)

    def _run(self) -> None:
        """The I/O thread: while no other thread drives the connection, pump it every ``PUMP_S`` (heartbeats,
        deliveries into the buffer) and run the calls queued for it."""
        while not self._closed:
            self._wake.wait(PUMP_S)
            self._wake.clear()
            with self._io:
                self._run_calls()
                channels = self._channels
                if channels is not None:
                    try:
                        channels.connection.process_data_events(time_limit=0)
                    except Exception as exc:  # noqa: BLE001 - the I/O thread must outlive anything pika throws
                        self._drop(exc)
                self._resend_orphans()
        with self._io:
            self._run_calls()  # what was submitted before close() (acks) still runs on the open connection
            self._disconnect()

    def _resend_orphans(self) -> None:
        """Publish the window's orphans again (reconnecting if needed). When it fails they stay orphans: tried again
        in ``PUMP_S``, by the next publish or by ``flush``."""
        resend = self.resend
        if resend is None or not self.window.orphans or self._closed:
            return
        with contextlib.suppress(BrokerError):
            self._invoke(resend)

    def _pump(self, generation: int, time_limit_s: float) -> bool:
        """Run queued calls, then let pika process I/O for up to ``time_limit_s`` (less when something arrives or a
        call is queued). False when the connection of ``generation`` is gone."""
        self._run_calls()
        channels = self._channels
        if channels is None or self.generation != generation:
            return False
        try:
            channels.connection.process_data_events(time_limit=time_limit_s)
        except Exception as exc:  # noqa: BLE001 - whatever pika throws, the connection is done for
            self._drop(exc)
            return False
        return self.generation == generation

    def _run_calls(self) -> None:
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._invoke(fn))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
                future.set_exception(exc)

    def _invoke(self, fn: Callable[[Channels], T]) -> T:
        """``fn(channels)``, with pika's errors turned into ours (and the connection dropped when it is lost)."""
        try:
            return fn(self._connected())
        except CONNECTION_ERRORS as exc:
            self._drop(exc)
            raise BrokerConnectionError(f"rabbitmq broker {self.masked_url} unreachable: {_describe(exc)}") from exc
        except pika.exceptions.AMQPError as exc:
            channels = self._channels
            if channels is not None and not channels.consume.is_open:
                self._drop(exc)
            raise BrokerError(f"rabbitmq broker {self.masked_url}: {_describe(exc)}") from exc

    def _connected(self) -> Channels:
        if self._channels is not None:
            return self._channels
        if self._closed:
            raise BrokerError(f"rabbitmq broker {self.masked_url}: closed")
        connection = BlockingConnection(self._params)
        try:
            self.generation += 1
            if self._on_socket is not None and (fd := socket_fd(connection)) is not None:
                self._on_socket(fd)
            self._channels = Channels(connection, self.generation, self.window)
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        return self._channels

    def _drop(self, exc: BaseException) -> None:
        """Forget a broken connection: buffered deliveries are void (the broker requeues them)."""
        self._disconnect()
        self._incoming.clear()

    def _disconnect(self) -> None:
        channels, self._channels = self._channels, None
        self.window.channel_lost()  # written, never confirmed: published again on the next connection
        if channels is not None:
            with contextlib.suppress(Exception):
                channels.connection.close()
            # Waiters learn about it from the generation: bump it so nothing acks into the new connection.
            self.generation += 1


def socket_fd(connection: BlockingConnection) -> int | None:
    """The file descriptor of ``connection``'s socket (pika internals: ``_impl._transport._sock``, fenced by
    tests/unit/test_pika_internals.py), or None when pika does not expose it."""
    sock = getattr(getattr(getattr(connection, "_impl", None), "_transport", None), "_sock", None)
    try:
        return int(sock.fileno()) if sock is not None else None
    except (OSError, ValueError):
        return None


def _undispatched(channels: Channels | None) -> bool:
    """Whether pika holds channel events (deliveries among them) that it read during another operation and has
    not dispatched yet (pika internals: ``BlockingConnection._channels_pending_dispatch``, fenced by
    tests/unit/test_pika_internals.py; True when pika does not expose it, so the caller pumps to be sure)."""
    if channels is None:
        return False
    return bool(getattr(channels.connection, "_channels_pending_dispatch", True))


def _nothing() -> None:
    """Wakes the I/O thread; the work itself is in the call queue."""


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return mask_secrets(text)


def _parameters(url: str, *, socket_timeout_s: float, name: str) -> pika.URLParameters:
    """pika parameters for ``url`` with Taskfleet's defaults where the URL's query does not set them."""
    try:
        params = pika.URLParameters(url)
    except Exception as exc:
        raise BrokerError(f"invalid rabbitmq URL {mask_url(url)!r}: {mask_secrets(str(exc))}") from exc
    query = parse_qs(urlsplit(url).query)
    if "heartbeat" not in query:
        params.heartbeat = HEARTBEAT_S
    if "socket_timeout" not in query:
        params.socket_timeout = socket_timeout_s
    if "stack_timeout" not in query:
        params.stack_timeout = socket_timeout_s
    if "blocked_connection_timeout" not in query:
        params.blocked_connection_timeout = max(60.0, socket_timeout_s * 6)
    params.connection_attempts = 1
    params.client_properties = {"connection_name": f"{name} pid={os.getpid()}"}
    return params
