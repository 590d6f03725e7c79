"""What the dashboard's parts share: history rows, queries and pages, time series, and the interfaces between the
history (``history``), the Kubernetes reader (``kube``) and the web app (``web``). Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

#: A task's states in the history: Celery's, plus SENT and RECEIVED (from events) and DEAD_LETTERED.
SENT, RECEIVED, STARTED = "SENT", "RECEIVED", "STARTED"
SUCCESS, FAILURE, RETRY, REVOKED, DEAD_LETTERED = "SUCCESS", "FAILURE", "RETRY", "REVOKED", "DEAD_LETTERED"
STATES = (SENT, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, DEAD_LETTERED)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEntry:
    """One task as the history knows it, built from its events (the latest attempt's state wins)."""

    task_id: str
    name: str | None = None
    state: str = SENT
    queue: str | None = None
    worker: str | None = None
    args: str | None = None  # repr(), cut as the events cut them
    kwargs: str | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    eta: str | None = None
    sent_at: float | None = None  # Unix seconds
    received_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    runtime_s: float | None = None
    first_seen_at: float = 0.0  # the first event's timestamp: the history's order
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEvent:
    """One event of a task, for its timeline."""

    task_id: str
    type: str  # task-sent, task-received, ...
    timestamp: float
    worker: str | None = None
    retries: int = 0
    detail: str | None = None  # reason, exception, ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskQuery:
    """A filtered page of the history, newest first. ``text`` matches inside args and kwargs; ``task_id`` is a prefix;
    ``since``/``until`` bound ``first_seen_at`` (Unix seconds). ``before`` is the cursor of the previous page's last
    row (keyset pagination: each page costs the same however deep it is)."""

    name: str | None = None
    state: str | None = None
    queue: str | None = None
    worker: str | None = None
    task_id: str | None = None
    text: str | None = None
    since: float | None = None
    until: float | None = None
    before: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[TaskEntry]
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True, slots=True, kw_only=True)
class Bucket:
    """One time bucket of task outcomes for one task name (or queue, or everything): counts and runtime
    percentiles (seconds; None without a finished run)."""

    start: float  # Unix seconds
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSample:
    at: float
    queue: str
    ready: int
    in_flight: int | None
    delayed: int | None
    dead: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleSample:
    """A TaskQueue's replicas at one moment, with the operator's reason (its status)."""

    at: float
    namespace: str
    name: str
    replicas: int
    desired: int | None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskQueueView:
    """A TaskQueue as the dashboard shows it: spec, status and conditions (no Secret values, ever)."""

    namespace: str
    name: str
    queues: list[str]
    replicas: int
    desired: int | None
    ready_workers: int | None
    min_replicas: int | None
    max_replicas: int | None
    conditions: list[dict[str, str]] = field(default_factory=list)  # type, status, reason, message


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeEvent:
    at: float
    type: str  # Normal, Warning
    reason: str
    message: str
    count: int = 1


class History(Protocol):
    """The durable history the web app reads (``history.store.HistoryStore`` implements it)."""

    def tasks(self, query: TaskQuery) -> TaskPage: ...

    def task(self, task_id: str) -> TaskEntry | None: ...

    def timeline(self, task_id: str) -> list[TaskEvent]: ...

    def children(self, task_id: str) -> list[TaskEntry]: ...

    def workflow(self, root_id: str, *, limit: int = 500) -> list[TaskEntry]: ...

    def buckets(self, *, since: float, until: float, step_s: float, name: str | None = None,
                queue: str | None = None) -> list[Bucket]: ...

    def task_names(self) -> list[str]: ...

    def queue_samples(self, *, since: float, until: float, queue: str | None = None) -> list[QueueSample]: ...

    def scale_samples(self, *, since: float, until: float, namespace: str | None = None,
                      name: str | None = None) -> list[ScaleSample]: ...


class KubeSource(Protocol):
    """TaskQueues and their Events (``kube.KubeReader`` implements it; absent off Kubernetes)."""

    def task_queues(self) -> list[TaskQueueView]: ...

    def events(self, namespace: str, name: str, *, limit: int = 50) -> list[KubeEvent]: ...
