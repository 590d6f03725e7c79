"""The span names and attributes of OpenTelemetry's messaging semantic conventions that Taskfleet's spans carry
(written out here rather than read from ``opentelemetry-semantic-conventions``, whose messaging names are still
incubating and move between releases)."""

from __future__ import annotations

import functools

from taskfleet._connections.schemes import kind_of
from taskfleet.errors import ConfigurationError

SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
#: Taskfleet's own: the task's registered name, which attempt this is (0: the first) and, on a process span, the
#: state stored for it (``SUCCESS``, ``FAILURE``, ``RETRY``; absent when none could be stored).
TASK_NAME = "taskfleet.task.name"
TASK_RETRIES = "taskfleet.task.retries"
TASK_STATE = "taskfleet.task.state"

SEND = "send"
PROCESS = "process"

#: ``messaging.system`` of the in-process broker (``memory://``), which the conventions do not name.
_MEMORY = "memory"


@functools.lru_cache(maxsize=64)
def messaging_system(broker_url: str | None) -> str:
    """The broker ``broker_url`` names, as ``messaging.system``: ``redis``, ``rabbitmq``, ``sqlite`` or ``memory``
    (``unknown`` for a URL no broker serves: a span never fails a publish)."""
    if not broker_url:
        return "unknown"
    try:
        name = kind_of(broker_url, "broker").name
    except ConfigurationError:
        return "unknown"
    return _MEMORY if name == "stub" else name


def span_name(operation: str, queue: str | None) -> str:
    """``send <queue>`` or ``process <queue>``: the conventions' ``{operation} {destination}``."""
    return f"{operation} {queue}" if queue else operation
