"""The one error tree of Taskfleet. Every error the library raises on purpose is a ``TaskfleetError``."""

from __future__ import annotations

import json


class TaskfleetError(Exception):
    """Base class of every error Taskfleet raises on purpose."""


class ConfigurationError(TaskfleetError, ValueError):
    """A setting is missing, unknown or has a bad value (e.g. no broker configured)."""


class BrokerError(TaskfleetError):
    """The broker refused or failed an operation."""


class BrokerConnectionError(BrokerError, ConnectionError):
    """The broker could not be reached, even after the configured retries."""


class PublishNotConfirmed(BrokerError):
    """Messages published without waiting for their confirm (RabbitMQ's ``windowed`` publisher confirms: ``delay``,
    ``apply_async``, ``send``) were not stored: refused by RabbitMQ (nack, or unroutable), or still unconfirmed when
    ``App.flush`` ran out of time. Raised by the next such publish, ``App.flush`` or a worker's ack; ``message_ids``
    are the messages' broker ids (their task ids)."""

    def __init__(self, text: str, message_ids: tuple[str, ...] = ()) -> None:
        super().__init__(text)
        self.message_ids = message_ids


class MessageError(TaskfleetError):
    """A message could not be built or read."""


class DecodeError(MessageError):
    """Bytes from the broker are not a valid Taskfleet message (malformed, wrong version, refused content type)."""


class ContentTypeRefused(DecodeError):
    """The message's content type is not in the worker's accept-list (e.g. pickle without opt-in)."""


class EncodeError(MessageError, TypeError):
    """Arguments or a result could not be serialized with the configured serializer."""


class MessageTooLarge(MessageError, ValueError):
    """An encoded message is larger than ``max_message_bytes``; it was not published."""


class TaskNotRegistered(TaskfleetError, KeyError):
    """No task with this name is registered in the worker's app."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "task not registered"


class ResultError(TaskfleetError):
    """A result could not be stored or read."""


class ResultTimeout(ResultError, TimeoutError):
    """``AsyncResult.get(timeout=...)`` ran out of time before the task finished."""


class TaskFailed(TaskfleetError):
    """A task failed with an exception whose type cannot be imported here; carries its type, message, traceback."""

    def __init__(self, exc_type: str, message: str, traceback: str | None = None) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback


class TaskRevoked(TaskfleetError):
    """The task was revoked or expired before it ran."""


class ChordError(TaskfleetError):
    """A chord's body did not run because a task of its header failed (after its retries) or was revoked; the
    message names that task. Stored as the FAILURE of the body (and of what was chained after it), so the chord's
    ``get()`` raises it."""


class Retry(TaskfleetError):
    """Raised by ``self.retry()`` inside a task: the worker re-enqueues the task after ``countdown_s``."""

    def __init__(self, exc: BaseException | None = None, countdown_s: float | None = None,
                 max_retries: int | None = None) -> None:
        super().__init__(f"retry in {countdown_s}s" if countdown_s is not None else "retry")
        self.exc = exc
        self.countdown_s = countdown_s
        self.max_retries = max_retries


class MaxRetriesExceeded(TaskfleetError):
    """A task asked for a retry but had used up ``max_retries``."""


class SoftTimeLimitExceeded(TaskfleetError):
    """Raised inside a running task when its ``soft_time_limit`` (seconds) has passed; the task may clean up."""


class TimeLimitExceeded(TaskfleetError):
    """The task ran past its hard ``time_limit`` and its worker child was killed."""


class WorkerLostError(TaskfleetError):
    """The worker child running the task died unexpectedly."""


class InvalidResource(ConfigurationError):
    """A Kubernetes resource (e.g. a TaskQueue) has a spec the operator cannot act on."""


class ClusterError(TaskfleetError):
    """The Kubernetes API refused or failed a request (the operator retries)."""


class ClusterConflict(ClusterError):
    """A write to the Kubernetes API lost a race with another writer (HTTP 409): read again and retry."""


def api_server_message(status: object, reason: object, body: str | None) -> str:
    """The text of a ``ClusterError`` from a failed Kubernetes API call: its status and reason, and the API server's
    own message (``Status.message`` in ``body``) when there is one. The operator's and the dashboard's Kubernetes
    adapters both wrap ``ApiException`` with it (this module imports no client library)."""
    try:
        message = json.loads(body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"Kubernetes API {status} {reason}: {message or body or ''}".strip()


class CoordinationError(BrokerError):
    """The broker refused or failed a beat coordination step (leader lease, tick claim, schedule state)."""


class ControlError(TaskfleetError):
    """A fleet-control command could not be sent, was refused by a worker, or a control message could not be read
    (a worker logs and drops one that does not parse; it never stops)."""
