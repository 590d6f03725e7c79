"""Taskfleet: a Kubernetes-native task queue for Python.

    from taskfleet import App
    app = App("billing", broker="redis://127.0.0.1:6379/0", result_backend="redis://127.0.0.1:6379/1")

    @app.task(queue="emails", max_retries=5, retry_backoff=True)
    def send(to: str) -> str: ...

    send.delay("a@b.c").get(timeout=5)
"""

from __future__ import annotations

from taskfleet.app import App
from taskfleet.canvas import GroupResult, chain, chord, chunks, group
from taskfleet.errors import (
    BrokerConnectionError,
    BrokerError,
    ChordError,
    ConfigurationError,
    ContentTypeRefused,
    CoordinationError,
    DecodeError,
    EncodeError,
    MaxRetriesExceeded,
    MessageTooLarge,
    PublishNotConfirmed,
    ResultTimeout,
    Retry,
    SoftTimeLimitExceeded,
    TaskFailed,
    TaskfleetError,
    TaskNotRegistered,
    TaskRevoked,
    TimeLimitExceeded,
    WorkerLostError,
)
from taskfleet.message import Message
from taskfleet.periodic import PeriodicEntry
from taskfleet.result import AsyncResult
from taskfleet.schedules import Every, crontab, next_run
from taskfleet.settings import PublishRetry, settings_from_env
from taskfleet.signature import Signature
from taskfleet.states import READY_STATES, State
from taskfleet.task import Request, Task, TaskOptions

__version__ = "0.1.0"

__all__ = [
    "READY_STATES",
    "App",
    "AsyncResult",
    "BrokerConnectionError",
    "BrokerError",
    "ChordError",
    "ConfigurationError",
    "ContentTypeRefused",
    "CoordinationError",
    "DecodeError",
    "EncodeError",
    "Every",
    "GroupResult",
    "MaxRetriesExceeded",
    "Message",
    "MessageTooLarge",
    "PeriodicEntry",
    "PublishNotConfirmed",
    "PublishRetry",
    "Request",
    "ResultTimeout",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "State",
    "Task",
    "TaskFailed",
    "TaskNotRegistered",
    "TaskOptions",
    "TaskRevoked",
    "TaskfleetError",
    "TimeLimitExceeded",
    "WorkerLostError",
    "chain",
    "chord",
    "chunks",
    "crontab",
    "group",
    "next_run",
    "settings_from_env",
]
