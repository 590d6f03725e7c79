"""``Producer``: an ``App``'s sending path. A call becomes a ``Message`` (countdown/eta and expires counted from one
``now``; queue, priority, serializer and compression decided by ``taskfleet.routing.resolve``: the call's own, else
the app's ``task_routes``, else the task's, else the app's), the message becomes bytes with its serializer and
compression (``max_message_bytes`` enforced on the bytes sent, ``max_decompressed_bytes`` on a compressed body) and
the bytes go to the broker: one at a time (``publish``) or in pipelined chunks (``send_many``).

Publish retries are the broker's: ``App(publish_retry=)`` reaches it through ``AppSettings.broker_settings()``; a
call's own policy (``retry=``, ``retry_policy=``: ``PublishRetry.for_call``) is handed to ``Broker.enqueue``.

``before_task_publish`` and ``after_task_publish`` (taskfleet.signals) are sent around each message only when a
receiver is connected; ``send_many`` (and a worker's ``publish_many`` of follow-ups) then encodes its chunks on the
calling thread, so receivers run where the call does.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskfleet import tracing
from taskfleet.brokers.base import Outgoing
from taskfleet.compression import compress
from taskfleet.errors import ConfigurationError, MessageTooLarge
from taskfleet.message import Message
from taskfleet.result import AsyncResult
from taskfleet.routing import Route, resolve
from taskfleet.serializers import get_serializer
from taskfleet.settings import PublishRetry, validate_queue_name
from taskfleet.signals import after_task_publish, announce_publish, announce_published, before_task_publish
from taskfleet.signature import Signature

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.fleet.sent_events import SentEvents

#: Messages per ``Broker.enqueue_many`` call in ``App.send_many``: one pipelined round trip or a few each, and a
#: bound on how long one call holds a connection (about 0.1-0.5 s).
SEND_MANY_CHUNK = 2000

#: A call of ``App.send_many``: a ``Signature`` or a ``(task name, args, kwargs)`` tuple.
Call = Signature | tuple[str, tuple[Any, ...] | list[Any], Mapping[str, Any]]


class Producer:
    """Builds, encodes and publishes the messages of one ``App`` (its ``send``, ``send_many`` and ``publish``).

    It holds nothing but the app: settings, serializer and broker are read from it at each call, so
    ``app.configure(...)`` and a fork (a new broker connection) apply at once."""

    __slots__ = ("_app", "_sent")

    def __init__(self, app: App) -> None:
        self._app = app
        #: ``task-sent`` events (``task_send_sent_event``): created on first use, so an app that never turns them
        #: on never imports their module.
        self._sent: SentEvents | None = None

    def message(
        self, name: str, args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any] | None, *,
        countdown: float | None, eta: datetime | None, expires: float | datetime | None, priority: int | None,
        queue: str | None, task_id: str | None, headers: Mapping[str, Any] | None, now: float,
        serializer: str | None = None, compression: str | None = None,
    ) -> Message:
        """The message of one call (see ``App.send``); ``now`` is the Unix time that ``countdown`` and ``expires``
        count from. ``queue``, ``priority``, ``serializer`` and ``compression`` are what the call gave (None: not
        given); the message gets them decided (``taskfleet.routing.resolve``)."""
        if countdown is not None and eta is not None:
            raise ValueError("pass countdown or eta, not both")
        eta_ts: float | None = None
        if countdown is not None:
            eta_ts = now + max(0.0, float(countdown))
        elif eta is not None:
            eta_ts = _timestamp(eta)
        expires_ts: float | None = None
        if isinstance(expires, datetime):
            expires_ts = _timestamp(expires)
        elif expires is not None:
            expires_ts = now + float(expires)
        args = tuple(args)
        kwargs = dict(kwargs or {})
        routing = resolve(self._app, name, args, kwargs, Route(
            queue=None if queue is None else _valid_queue(queue), priority=priority, serializer=serializer,
            compression=compression))
        return Message(
            id=task_id or uuid.uuid4().hex, task=name, args=args, kwargs=kwargs, queue=routing.queue,
            priority=routing.priority, eta=eta_ts, expires=expires_ts, headers=dict(headers or {}), created_at=now,
            serializer=routing.serializer, compression=routing.compression,
        )

    def encode(self, message: Message, *, check_size: bool = True) -> bytes:
        """The wire bytes of ``message`` with its serializer and compression (a message without a serializer: the
        app's serializer and compression). Raises ``EncodeError`` for unserializable arguments, ``MessageTooLarge``
        for a body above ``max_decompressed_bytes`` to compress or (``check_size``) wire bytes above
        ``max_message_bytes``, ``ConfigurationError`` for a serializer outside the app's ``accept_content``."""
        settings = self._app.settings
        if message.serializer is None:
            serializer, compression = self._app.serializer, settings.compression
        elif message.serializer in settings.accept_content:
            serializer, compression = get_serializer(message.serializer), message.compression
        else:
            raise ConfigurationError(f"serializer {message.serializer!r} (for {message.task}) is not in the app's "
                                     f"accept_content {sorted(settings.accept_content)}")
        body = message.encode_body(serializer)
        if compression is not None:
            if len(body) > settings.max_decompressed_bytes:
                raise MessageTooLarge(
                    f"message for {message.task} is {len(body)} bytes before compression, above "
                    f"max_decompressed_bytes={settings.max_decompressed_bytes} (a worker would refuse to inflate it);"
                    " pass a reference (URL, key) instead of the payload")
            body = compress(compression, body)
        data = Message.frame(serializer, compression, body)
        limit = settings.max_message_bytes
        if check_size and len(data) > limit:
            raise MessageTooLarge(
                f"message for {message.task} is {len(data)} bytes, above max_message_bytes={limit}; "
                "pass a reference (URL, key) instead of the payload"
            )
        return data

    def publish(self, message: Message, *, retry: PublishRetry | None = None, windowed: bool = False) -> None:
        """Encode ``message`` and hand it to the broker (see ``App.publish``), between the publish signals, in a
        span when tracing is on (taskfleet.tracing); ``retry``: this publish's retry policy instead of the app's
        ``publish_retry``. ``windowed``: through ``Broker.enqueue_nowait`` (``delay``, ``send``: RabbitMQ collects
        the confirm later); else ``Broker.enqueue``, stored on return (what a worker needs before it acks)."""
        tracer = tracing.publisher()
        if tracer is None:
            self._publish(message, retry, windowed)
        else:
            tracer.publish(self._app, message, functools.partial(self._publish, retry=retry, windowed=windowed))

    def _publish(self, message: Message, retry: PublishRetry | None, windowed: bool = False) -> None:
        if before_task_publish.receivers:
            message = announce_publish(message)
        data = self.encode(message)
        broker = self._app.broker
        enqueue = broker.enqueue_nowait if windowed else broker.enqueue
        if retry is None:
            enqueue(message.queue, message.broker_id, data, priority=message.priority, delay_s=message.delay_s())
        else:
            enqueue(message.queue, message.broker_id, data, priority=message.priority, delay_s=message.delay_s(),
                    retry=retry)
        if after_task_publish.receivers:
            announce_published(message)
        if self._app.settings.task_send_sent_event:
            self.sent_events().emit([message])

    def sent_events(self) -> SentEvents:
        """This app's ``task-sent`` emitter (``taskfleet.fleet.sent_events``)."""
        if self._sent is None:
            from taskfleet.fleet.sent_events import SentEvents

            self._sent = SentEvents(self._app)
        return self._sent

    def close(self) -> None:
        """Close what this process opened for task-sent events (``App.close``)."""
        if self._sent is not None:
            self._sent.close()

    def send_many(
        self, calls: Iterable[Call], *, queue: str | None, priority: int | None, countdown: float | None,
        retry: PublishRetry | None = None,
    ) -> list[AsyncResult]:
        """Send ``calls`` in chunks of ``SEND_MANY_CHUNK`` (see ``App.send_many``)."""
        if queue is not None:
            validate_queue_name(queue)
        signatures = [call if isinstance(call, Signature) else _signature(call) for call in calls]
        if not signatures:
            return []
        ids = _task_ids(len(signatures))
        now = time.time()
        app = self._app

        for signature in signatures:
            if signature.callbacks or signature.errbacks:
                raise TypeError(f"send_many sends task calls without callbacks; {signature!r} has link/link_error: "
                                "send a group instead (taskfleet.group(...).apply_async())")
        ids = [signature.task_id or task_id for signature, task_id in zip(signatures, ids, strict=True)]

        def build(start: int, stop: int) -> list[Message]:
            chunk = []
            for signature, task_id in zip(signatures[start:stop], ids[start:stop], strict=True):
                own_delay = countdown is None and (signature.countdown is not None or signature.eta is not None)
                chunk.append(self.message(
                    signature.task, signature.args, signature.kwargs,
                    countdown=signature.countdown if own_delay else countdown, eta=signature.eta if own_delay else None,
                    expires=signature.expiry(app), priority=signature.priority if priority is None else priority,
                    queue=queue or signature.queue, task_id=task_id, headers=signature.headers, now=now,
                    serializer=signature.serializer, compression=signature.compression))
            return chunk

        self._publish_chunks(len(signatures), build, retry)
        return [AsyncResult(task_id, app=app) for task_id in ids]

    def publish_many(self, messages: Sequence[Message], *, retry: PublishRetry | None = None) -> None:
        """Publish ``messages`` as ``send_many`` does (chunks of ``SEND_MANY_CHUNK``, pipelined), each with its own
        task id and workflow data; one message is simply published. ``retry`` as for ``publish``."""
        if len(messages) == 1:
            self.publish(messages[0], retry=retry)
        elif messages:
            self._publish_chunks(len(messages), lambda start, stop: list(messages[start:stop]), retry)

    def _publish_chunks(self, total: int, build: Callable[[int, int], list[Message]],
                        retry: PublishRetry | None = None) -> None:
        """Encode and enqueue ``total`` messages, ``build(start, stop)`` giving those of one chunk, between the
        publish signals when they have receivers. A chunk that cannot be sent raises after the chunks before it were
        stored; the note says how many were sent."""
        signalled = bool(before_task_publish.receivers or after_task_publish.receivers)
        sent = self.sent_events() if self._app.settings.task_send_sent_event else None
        announce = signalled or sent is not None
        broker = self._app.broker
        enqueue_many: Callable[[list[Outgoing]], None] = broker.enqueue_many if retry is None else \
            functools.partial(broker.enqueue_many, retry=retry)
        tracer = tracing.publisher()
        if tracer is not None:  # a span per message, on this thread: the caller's context is their parent
            build, enqueue_many = tracer.chunks(self._app, build, enqueue_many)

        def encode(start: int) -> tuple[list[Outgoing], list[Message]]:
            """The chunk from ``start``, and its messages when the publish signals have receivers or task-sent
            events are on."""
            messages = build(start, min(total, start + SEND_MANY_CHUNK))
            if signalled:
                messages = [announce_publish(m) for m in messages]
            # Each until its eta from now: a later chunk waits less.
            return ([Outgoing(m.queue, m.broker_id, self.encode(m), m.priority, m.delay_s()) for m in messages],
                    messages if announce else [])

        def published(messages: list[Message]) -> None:
            """After a chunk is stored: ``after_task_publish`` per message, then one batch of task-sent."""
            if after_task_publish.receivers:
                for message in messages:
                    announce_published(message)
            if sent is not None:
                sent.emit(messages)

        if total <= SEND_MANY_CHUNK or announce or tracer is not None:  # one chunk, or work for this thread
            _send_here(enqueue_many, encode, total, published)
        else:
            _send_pipelined(enqueue_many, encode, total)


_Encode = Callable[[int], tuple[list[Outgoing], list[Message]]]
_EnqueueMany = Callable[[list[Outgoing]], None]


def _send_here(enqueue_many: _EnqueueMany, encode: _Encode, total: int,
               published: Callable[[list[Message]], None]) -> None:
    """Encode and store the ``total`` calls chunk by chunk on this thread, calling ``published`` with the messages
    ``encode`` returns once their chunk is stored."""
    for start in range(0, total, SEND_MANY_CHUNK):
        try:
            chunk, messages = encode(start)
            enqueue_many(chunk)
        except Exception as exc:
            _note_sent(exc, start, total)
            raise
        if messages:
            published(messages)


def _send_pipelined(enqueue_many: _EnqueueMany, encode: _Encode, total: int) -> None:
    """Store the ``total`` calls chunk by chunk, the next chunk encoded on a helper thread while the broker stores
    this one (the broker call waits on the network with the GIL released); the broker itself is only ever called
    from this thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskfleet-send-many") as encoder:
        upcoming = encoder.submit(encode, 0)
        for start in range(0, total, SEND_MANY_CHUNK):
            try:
                chunk, _ = upcoming.result()
                if start + SEND_MANY_CHUNK < total:
                    upcoming = encoder.submit(encode, start + SEND_MANY_CHUNK)
                enqueue_many(chunk)
            except Exception as exc:
                _note_sent(exc, start, total)
                raise


def _task_ids(count: int) -> list[str]:
    """``count`` new task ids, each as ``uuid.uuid4().hex`` would make it (random, version 4), from one read of
    the OS's random source instead of one each."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    text = raw.hex()
    return [text[start:start + 32] for start in range(0, 32 * count, 32)]


def _valid_queue(name: str) -> str:
    """``validate_queue_name``, remembered for the queues in use (it runs for every message sent)."""
    return _valid_queue_name(name) if isinstance(name, str) else validate_queue_name(name)


_valid_queue_name = functools.lru_cache(maxsize=256)(validate_queue_name)


def _note_sent(exc: Exception, sent: int, total: int) -> None:
    exc.add_note(f"send_many: the first {sent} of {total} calls were sent before this error; the others were not, "
                 "or not all of them")


def _signature(call: Any) -> Signature:
    """A ``(task name, args, kwargs)`` call of ``send_many`` as a ``Signature``."""
    if not isinstance(call, tuple) or len(call) != 3:
        raise TypeError(f"send_many takes Signatures or (task name, args, kwargs) tuples, got {call!r}")
    name, args, kwargs = call
    return Signature(task=name, args=tuple(args), kwargs=kwargs or {})


def _timestamp(when: datetime) -> float:
    """Unix seconds of ``when``; a naive datetime is taken as UTC."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
