"""Worker settings: one frozen dataclass, built by the CLI (the entrypoint) from flags and env."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taskfleet.errors import ConfigurationError
from taskfleet.fleet.records import DEFAULT_HEARTBEAT_INTERVAL_S, PodInfo
from taskfleet.settings import validate_queue_name
from taskfleet.worker.cpus import usable_cpus

#: The most messages a child leases per fetch (fewer when its tasks are slow: taskfleet.worker.fetch_window); their
#: acks go out together when they are done. Large enough to amortise round trips for short tasks (on Redis a fetch
#: and an ack per 8 tasks: about twice the no-op drain rate of 4, measured with `make bench`, docs/benchmarks.md);
#: small enough that a burst of medium tasks is not queued up behind one another in one child while its siblings
#: idle. Prefetched messages count as in-flight, so a busy worker never hides a backlog, and what waits too long
#: behind running tasks goes back (see ``prefetch_release_s``). On RabbitMQ the CLI's default is 32 instead
#: (``DEFAULT_PREFETCH_RABBITMQ``: fewer windows, each of which costs a round trip).
DEFAULT_PREFETCH = 8
#: ``async def`` tasks in progress at once per child (``WorkerSettings.async_concurrency``).
DEFAULT_ASYNC_CONCURRENCY = 256
#: The CLI's default prefetch on RabbitMQ (amqp://, amqps://). RabbitMQ pushes the next deliveries only once it has
#: the acks of the last ones, so every window costs the child an idle round trip, a Fetched and a Done event to the
#: supervisor and an ack frame; at 8 that was about 0.05 ms of worker CPU per no-op task (0.17 ms at 8, 0.13 at 16,
#: 0.12 at 32, 0.11 at 64: docs/benchmarks.md). Work still spreads: a child gives back the unstarted messages that
#: have waited ``prefetch_release_s`` behind its running tasks, and prefetched messages count as in-flight
#: (unacked) for the operator's scaling.
DEFAULT_PREFETCH_RABBITMQ = 32
#: A prefetched message that has waited this long in a child while tasks ran goes back to the queue, with every
#: other unstarted one, so that neither one long task nor a row of medium ones keeps messages in a busy child while
#: another child, or a pod just scaled up, idles. A child alone on its queue takes them again at its next fetch.
DEFAULT_PREFETCH_RELEASE_S = 0.5
#: On SIGTERM or SIGINT children stop fetching and give back their prefetched messages; running tasks get this long
#: to finish. Then (or at a second signal) the children are SIGKILLed and their running messages go back to the queue
#: to run again. Keep it below the pod's ``terminationGracePeriodSeconds`` (the operator sets that to this plus a
#: margin).
DEFAULT_DRAIN_TIMEOUT_S = 30.0
#: How long a blocking fetch waits before the child checks for shutdown again.
DEFAULT_POLL_TIMEOUT_S = 1.0
#: A child that sent no heartbeat for this long makes /healthz fail.
DEFAULT_CHILD_STALL_S = 30.0
#: At start the worker pings the broker about once a second for up to this long, then exits 4 (BROKER_UNREACHABLE)
#: so an orchestrator restarts it; 0: one try.
DEFAULT_BROKER_CONNECT_TIMEOUT_S = 30.0
DEFAULT_HEALTH_PORT_IN_CONTAINER = 8000
DEFAULT_TERMINATE_GRACE_S = 5.0

LogFormat = Literal["json", "console", "auto"]


def default_prefetch(broker_url: str) -> int:
    """The worker's default ``prefetch`` for a broker URL: ``DEFAULT_PREFETCH_RABBITMQ`` on RabbitMQ,
    ``DEFAULT_PREFETCH`` elsewhere."""
    scheme = broker_url.partition(":")[0].lower()
    return DEFAULT_PREFETCH_RABBITMQ if scheme in ("amqp", "amqps") else DEFAULT_PREFETCH


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """How one ``taskfleet worker`` process tree runs."""

    #: Queues the children consume, at least one, served fairly with the highest priority first; the CLI defaults to
    #: the app's ``default_queue``.
    queues: tuple[str, ...]
    #: Child processes forked, each running one task at a time (``async def`` tasks: up to ``async_concurrency``);
    #: at least 1. A child that exits is respawned. Default:
    #: the CPUs this process may use (its CPU affinity and its cgroup's CPU limit, rounded up; see
    #: ``taskfleet.worker.cpus``), not the host's CPU count: 2 in a pod limited to 2 CPUs on a 64-CPU node.
    concurrency: int = field(default_factory=usable_cpus)
    prefetch: int = DEFAULT_PREFETCH
    prefetch_release_s: float = DEFAULT_PREFETCH_RELEASE_S
    #: ``async def`` tasks a child runs at once on its event loop (docs/async.md); a child that has met an async
    #: task leases up to this many messages per fetch instead of ``prefetch``. The default, 256: two children of
    #: tasks awaiting 100 ms serve about 5,000 tasks/s on paper (2 x 256 / 0.1 s), and 256 sockets per child stay
    #: well inside the usual 1,024 open-file limit. Unused until a child meets an async task.
    async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY
    #: A child exits after finishing this many tasks and a fresh one is forked in its place, bounding slow leaks.
    #: None: never.
    max_tasks_per_child: int | None = None
    #: After each task a child whose resident memory (RSS, MiB) is above this exits and a fresh one is forked in its
    #: place. The running task is never interrupted. None: no limit.
    max_memory_per_child_mb: float | None = None
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    #: A task revoked with ``terminate`` gets the revocation's signal (SIGTERM by default); its child is SIGKILLed
    #: when it has not exited this many seconds later. Its message is acked either way, never run again.
    terminate_grace_s: float = DEFAULT_TERMINATE_GRACE_S
    poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S
    child_stall_s: float = DEFAULT_CHILD_STALL_S
    broker_connect_timeout_s: float = DEFAULT_BROKER_CONNECT_TIMEOUT_S
    #: Address the health server (``health_port``) binds; ``0.0.0.0``: every interface, so the kubelet can probe it.
    health_host: str = "0.0.0.0"
    #: Port of the health server (``/healthz``, ``/readyz``, ``/metrics``; 0: any free port); None: no HTTP server.
    #: The CLI sets it from ``--health-port``, ``TASKFLEET_HEALTH_PORT`` or, in a container, 8000 (given up with a
    #: warning when another process holds it; a port asked for and in use is a configuration error).
    health_port: int | None = None
    #: Log lines on stderr: ``json`` (one object per line), ``console`` (for people) or ``auto`` (console on a TTY,
    #: JSON otherwise). Children inherit it.
    log_format: LogFormat = "auto"
    #: Lowest level logged, case-insensitive: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
    log_level: str = "info"
    #: Log what a child writes to ``sys.stdout`` (at ``info``) and ``sys.stderr`` (at ``warning``), line by line, as
    #: events of the task that wrote it (``task_id``, ``task``): a ``print()`` in a task is a JSON line in JSON mode.
    #: Celery's ``worker_redirect_stdouts`` (which logs both streams at one level, ``WARNING``); see
    #: ``taskfleet.worker.log_redirect``. False: what a task writes goes to the process's stdout and stderr as is.
    redirect_stdouts: bool = True
    #: Each child emits task events (received, started, and how each task ended) to the app's event stream, in
    #: batches of one broker call per 250 ms at most (taskfleet.worker.task_events, docs/events.md); and the worker
    #: its online, heartbeat and offline events. Celery's ``-E`` and ``worker_send_task_events``: the CLI sets it
    #: from ``-E``, ``TASKFLEET_WORKER_SEND_TASK_EVENTS`` or the app's ``worker_send_task_events``. Off: nothing is
    #: built or sent.
    send_task_events: bool = False
    #: Every this many seconds the supervisor publishes the worker's record (queues, pool, counts, what each child
    #: runs) to the broker, where it expires after ``MISSED_HEARTBEATS`` (3) intervals: ``taskfleet workers`` and
    #: ``app.control.workers()`` list it, and a worker that dies leaves the list within about three intervals
    #: (taskfleet.worker.heartbeat). None: no heartbeats (Celery's ``--without-heartbeat``): the worker is not
    #: listed, though it still answers ``inspect`` and ``control``.
    heartbeat_interval_s: float | None = DEFAULT_HEARTBEAT_INTERVAL_S
    #: The worker's pod on Kubernetes, part of its record: read at the entrypoint from ``TASKFLEET_POD_NAME``,
    #: ``TASKFLEET_POD_NAMESPACE`` and ``TASKFLEET_POD_UID``, which the operator's Deployment sets through the
    #: downward API. None: not on Kubernetes (or not all three set).
    pod: PodInfo | None = None

    def __post_init__(self) -> None:
        if not self.queues:
            raise ConfigurationError("a worker needs at least one queue")
        for queue in self.queues:
            validate_queue_name(queue)
        if self.concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        if self.prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")
        if self.async_concurrency < 1:
            raise ConfigurationError("async_concurrency must be >= 1")
        if self.max_tasks_per_child is not None and self.max_tasks_per_child < 1:
            raise ConfigurationError("max_tasks_per_child must be >= 1")
        if self.max_memory_per_child_mb is not None and self.max_memory_per_child_mb <= 0:
            raise ConfigurationError("max_memory_per_child_mb must be > 0")
        if self.terminate_grace_s < 0:
            raise ConfigurationError("terminate_grace_s must be >= 0")
        if self.drain_timeout_s < 0:
            raise ConfigurationError("drain_timeout_s must be >= 0")
        if self.heartbeat_interval_s is not None and self.heartbeat_interval_s <= 0:
            raise ConfigurationError("heartbeat_interval_s must be > 0 (None: no heartbeats)")
        if self.health_port is not None and not (0 <= self.health_port <= 65535):
            raise ConfigurationError("health_port must be 0-65535")
