"""One pika connection owned by one I/O thread: the way to use pika safely from several threads.

pika's ``BlockingConnection`` may only be touched by one thread, and it answers heartbeats only while that thread
is inside pika. So a dedicated daemon thread owns the connection and pumps it all the time (heartbeats keep flowing
while a task runs for an hour); other threads hand it work with ``call(fn)`` and wait for the answer. Consumer
deliveries land in a buffer that ``take`` reads.

The connection is opened on first use and again after it drops (lazily, by the next ``call``). Every (re)connect
starts a new *generation*: deliveries of an older generation can no longer be acked (RabbitMQ has already put them
back in their queues), and consumers must be started again.
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
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from taskfleet.errors import BrokerConnectionError, BrokerError
from taskfleet.urls import mask_secrets, mask_url

T = TypeVar("T")

#: AMQP heartbeat: a dead peer is noticed within about two of these.
HEARTBEAT_S = 30
#: Longest the I/O thread sleeps inside pika before looking at its call queue again (calls also wake it at once).
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


@dataclass(frozen=True, slots=True)
class RawDelivery:
    """A message pushed to one of this link's consumers."""

    generation: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes


class Channels:
    """The channels of one connection: ``publish`` (confirm mode), ``consume`` (consumers and their acks) and
    ``admin`` (declares and inspection, whose errors close only that channel). Used on the I/O thread only."""

    def __init__(self, connection: BlockingConnection, generation: int) -> None:
        self.connection = connection
        self.generation = generation
        self.consume: BlockingChannel = connection.channel()
        self._publish: BlockingChannel | None = None
        self._admin: BlockingChannel | None = None

    @property
    def publish(self) -> BlockingChannel:
        if self._publish is None or not self._publish.is_open:
            self._publish = self.connection.channel()
            self._publish.confirm_delivery()
        return self._publish

    @property
    def admin(self) -> BlockingChannel:
        if self._admin is None or not self._admin.is_open:
            self._admin = self.connection.channel()
        return self._admin


class AmqpLink:
    """A connection to one RabbitMQ URL, driven by its own I/O thread. Thread-safe; not shared across ``fork()``
    (make a new one in the child)."""

    def __init__(self, url: str, *, socket_timeout_s: float, name: str = "taskfleet") -> None:
        self.url = url
        self.masked_url = mask_url(url)
        self.socket_timeout_s = socket_timeout_s
        self.name = name
        self.generation = 0
        self._params = _parameters(url, socket_timeout_s=socket_timeout_s, name=name)
        self._calls: queue.SimpleQueue[tuple[Callable[[Channels], Any], Future[Any]]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._incoming: deque[RawDelivery] = deque()
        self._arrived = threading.Condition()
        self._channels: Channels | None = None
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._closed = False

    # -- used by any thread ------------------------------------------------------------------------------------

    def call(self, fn: Callable[[Channels], T], *, action: str, timeout_s: float | None = None) -> T:
        """Run ``fn(channels)`` on the I/O thread (connecting first if needed) and return its result. A lost or
        unreachable connection raises ``BrokerConnectionError``; a channel closed by the broker ``BrokerError``."""
        if self._closed:
            raise BrokerError(f"rabbitmq broker {self.masked_url}: used after close()")
        if os.getpid() != self._owner_pid:
            raise BrokerError("a RabbitMQ connection cannot be used across fork(); open a new broker in the child")
        self._ensure_thread()
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
        """Run ``fn(channels)`` on the I/O thread without waiting for it (after anything submitted or called
        before). For acks: a lost one only means a redelivery."""
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._ensure_thread()
        self._calls.put((fn, Future()))
        self._poke()

    def take(self, max_messages: int, timeout_s: float) -> tuple[int, list[RawDelivery]]:
        """Up to ``max_messages`` consumer deliveries, waiting up to ``timeout_s`` for the first. Returns the current
        generation too, so a caller can tell that the connection was lost while it waited."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._arrived:
            generation = self.generation
            while not self._incoming and self.generation == generation:  # a lost connection ends the wait
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
            taken = [self._incoming.popleft() for _ in range(min(max_messages, len(self._incoming)))]
            return self.generation, taken

    def close(self) -> None:
        """Close the connection and stop the I/O thread. Unacked deliveries go back to their queues."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._poke()
        if thread is not None and thread is not threading.current_thread() and os.getpid() == self._owner_pid:
            thread.join(timeout=self.socket_timeout_s)

    # -- used on the I/O thread (inside ``call``) ---------------------------------------------------------------

    def on_message(self, channel: BlockingChannel, method: Any, properties: pika.BasicProperties,
                   body: bytes) -> None:
        """Consumer callback (pass it to ``basic_consume``): buffer the delivery for ``take``."""
        delivery = RawDelivery(self.generation, method.consumer_tag, method.delivery_tag, bool(method.redelivered),
                               properties, body)
        with self._arrived:
            self._incoming.append(delivery)
            self._arrived.notify()

    def drain_buffer(self) -> list[RawDelivery]:
        """Remove and return every buffered delivery (to give them back)."""
        with self._arrived:
            taken = list(self._incoming)
            self._incoming.clear()
            return taken

    # -- the I/O thread ----------------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="taskfleet-amqp", daemon=True)
                self._thread.start()

    def _poke(self) -> None:
        self._wake.set()
        channels = self._channels
        if channels is not None:
            with contextlib.suppress(Exception):  # a closing connection refuses; the event covers that case
                channels.connection.add_callback_threadsafe(_nothing)

    def _run(self) -> None:
        while not self._closed:
            self._wake.clear()
            self._run_calls()
            channels = self._channels
            if channels is None:
                self._wake.wait(PUMP_S)
                continue
            try:
                channels.connection.process_data_events(time_limit=PUMP_S)
            except CONNECTION_ERRORS as exc:
                self._drop(exc)
            except pika.exceptions.AMQPError as exc:
                self._drop(exc)  # e.g. the consume channel died under its consumers: start over cleanly
            except Exception as exc:  # noqa: BLE001 - the I/O thread must outlive anything pika throws
                self._drop(exc)
        self._run_calls()  # what was submitted before close() (acks) still runs on the open connection
        self._disconnect()

    def _run_calls(self) -> None:
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(self._connected()))
            except CONNECTION_ERRORS as exc:
                self._drop(exc)
                future.set_exception(BrokerConnectionError(
                    f"rabbitmq broker {self.masked_url} unreachable: {_describe(exc)}"
                ))
            except pika.exceptions.AMQPError as exc:
                channels = self._channels
                if channels is not None and not channels.consume.is_open:
                    self._drop(exc)
                future.set_exception(BrokerError(f"rabbitmq broker {self.masked_url}: {_describe(exc)}"))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
                future.set_exception(exc)

    def _connected(self) -> Channels:
        if self._channels is not None:
            return self._channels
        if self._closed:
            raise BrokerError(f"rabbitmq broker {self.masked_url}: closed")
        connection = BlockingConnection(self._params)
        try:
            self.generation += 1
            self._channels = Channels(connection, self.generation)
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        return self._channels

    def _drop(self, exc: BaseException) -> None:
        """Forget a broken connection: buffered deliveries are void (the broker requeues them)."""
        self._disconnect()
        with self._arrived:
            self._incoming.clear()
            self._arrived.notify_all()

    def _disconnect(self) -> None:
        channels, self._channels = self._channels, None
        if channels is not None:
            with contextlib.suppress(Exception):
                channels.connection.close()
            # Waiters learn about it from the generation: bump it so nothing acks into the new connection.
            self.generation += 1


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
