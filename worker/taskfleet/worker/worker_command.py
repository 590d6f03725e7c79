"""``taskfleet worker``: parse flags, apply env (this is an entrypoint), load the app, wait for the broker, run."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskfleet import brokers
from taskfleet.app import App
from taskfleet.brokers.beat_store import DEFAULT_LEASE_S
from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.config import DEFAULT_NAMESPACE, read_config
from taskfleet.errors import BrokerError, ConfigurationError, TaskfleetError
from taskfleet.fleet.records import DEFAULT_HEARTBEAT_INTERVAL_S, pod_from_env, worker_id
from taskfleet.settings import BrokerSettings, settings_from_env
from taskfleet.urls import mask_url
from taskfleet.worker import cpus
from taskfleet.worker.app_report import warn_unregistered
from taskfleet.worker.exitcodes import ExitCode
from taskfleet.worker.loader import AppImportError, load_app, prepare_app
from taskfleet.worker.logging import configure_cli_logging, get_logger, route_structlog
from taskfleet.worker.metrics import BeatMetrics, UnservedBeatMetrics, UnservedWorkerMetrics, WorkerMetrics
from taskfleet.worker.settings import (
    DEFAULT_ASYNC_CONCURRENCY,
    DEFAULT_BROKER_CONNECT_TIMEOUT_S,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_HEALTH_PORT_IN_CONTAINER,
    DEFAULT_PREFETCH,
    DEFAULT_PREFETCH_RABBITMQ,
    WorkerSettings,
    default_prefetch,
)

if TYPE_CHECKING:
    import socket

    from taskfleet.worker.beat import BeatThread
    from taskfleet.worker.control_server import ControlServer
    from taskfleet.worker.health import HealthServer
    from taskfleet.worker.heartbeat import Heartbeat, RecordHook
    from taskfleet.worker.supervisor import Supervisor

# What the supervisor has imported when it forks is in each child too, so ``run`` imports beat (``--beat``) only
# when it is used, and the health server and prometheus_client (a health port) only after the first fork. The
# supervisor itself is imported there too: ``taskfleet beat`` imports this module for its helpers.

ENV_HEALTH_PORT = "TASKFLEET_HEALTH_PORT"
#: Celery's ``worker_send_task_events`` as an environment variable (``1``/``true``/``0``/``false``...): what ``-E``
#: does, for a Deployment that sets env rather than arguments.
ENV_WORKER_SEND_TASK_EVENTS = "TASKFLEET_WORKER_SEND_TASK_EVENTS"
#: The ``--health-port`` help of ``taskfleet worker`` and ``taskfleet beat``.
HEALTH_PORT_HELP = (f"serve /healthz, /readyz, /metrics on this port (0: any free one); a port in use is an error "
                    f"(exit 5). Default: {ENV_HEALTH_PORT}, else {DEFAULT_HEALTH_PORT_IN_CONTAINER} in a container "
                    f"unless another process has it (then none, with a warning), else none")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet worker`` (``name``) on the ``taskfleet`` parser."""
    p = subparsers.add_parser(name, help=summary, description=__doc__)
    p.add_argument("-A", "--app", required=True, help="module:attribute of your App, or a module holding one App")
    p.add_argument("-Q", "--queues", default=None, help="comma-separated queues to consume (default: the app's)")
    p.add_argument("-c", "--concurrency", type=int, default=cpus.usable_cpus(),
                   help="child processes (default: the CPUs this process may use: its CPU affinity and its cgroup's "
                        "CPU limit, rounded up; 2 in a pod limited to 2 CPUs)")
    p.add_argument("--prefetch", type=int, default=None,
                   help=f"the most messages leased per child fetch, fewer when tasks are slow (default: "
                        f"{DEFAULT_PREFETCH_RABBITMQ} on RabbitMQ, {DEFAULT_PREFETCH} on the other brokers)")
    p.add_argument("--async-concurrency", type=int, default=DEFAULT_ASYNC_CONCURRENCY, metavar="N",
                   help="async def tasks each child runs at once on its event loop (docs/async.md)")
    p.add_argument("--max-tasks-per-child", type=int, default=None, help="recycle a child after N tasks")
    p.add_argument("--max-memory-per-child", type=float, default=None, metavar="MB",
                   help="recycle a child whose resident memory exceeds MB after a task")
    p.add_argument("--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT_S, metavar="S",
                   help="on SIGTERM, let running tasks finish for up to S seconds")
    p.add_argument("--broker", default=None, help="broker URL (overrides the app and TASKFLEET_BROKER_URL)")
    p.add_argument("--broker-management-url", default=None, metavar="URL",
                   help="RabbitMQ management API (in-flight counts); overrides TASKFLEET_BROKER_MANAGEMENT_URL")
    p.add_argument("--result-backend", default=None, help="result backend URL (overrides app and env)")
    p.add_argument("--broker-timeout", type=float, default=DEFAULT_BROKER_CONNECT_TIMEOUT_S, metavar="S",
                   help="give up (exit 4) when the broker does not answer within S seconds at start")
    p.add_argument("--health-port", type=int, default=None, help=HEALTH_PORT_HELP)
    p.add_argument("--health-host", default="0.0.0.0", help="address of the health server")
    p.add_argument("--log-format", choices=["json", "console", "auto"], default="auto")
    p.add_argument("-l", "--log-level", default="info")
    p.add_argument("--no-redirect-stdouts", dest="redirect_stdouts", action="store_false",
                   help="let tasks write to stdout and stderr as they are (default: each line a log event of its "
                        "task, stdout at info, stderr at warning)")
    p.add_argument("-E", "--events", action="store_true",
                   help="emit task and worker events to the app's event stream (taskfleet events); default: "
                        f"{ENV_WORKER_SEND_TASK_EVENTS}, else the app's worker_send_task_events")
    p.add_argument("--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_INTERVAL_S, metavar="S",
                   help="publish the worker's record (taskfleet workers) every S seconds; it expires after three "
                        "missed ones")
    p.add_argument("--without-heartbeat", action="store_true",
                   help="publish no heartbeat records (Celery's flag): the worker is not listed by taskfleet "
                        "workers, though it still answers inspect and control")
    p.add_argument("--beat", action="store_true",
                   help="also run a beat replica in this worker (sends periodic tasks; safe with many replicas)")
    add_beat_flags(p)
    p.add_argument("--check", action="store_true",
                   help="probe a running worker's /healthz on --health-port and exit 0 (healthy) or 1")
    p.set_defaults(handler=run)


def add_beat_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``taskfleet beat`` and ``taskfleet worker --beat``."""
    p.add_argument("--beat-lease", type=float, default=DEFAULT_LEASE_S, metavar="S",
                   help="beat leader lease: a dead leader is replaced within about S seconds")


#: Its existence marks a Docker container (one of the two signs of a container, with ``KUBERNETES_SERVICE_HOST``).
DOCKERENV = Path("/.dockerenv")


@dataclass(frozen=True)
class HealthPort:
    """Where the health server listens: ``port`` (0: any free one), and whether it was asked for (``explicit``:
    ``--health-port`` or ``TASKFLEET_HEALTH_PORT``; a busy port is then a configuration error) or is the container
    default (a busy port is then given up with a warning: a second process on the machine never fails to start)."""

    port: int
    explicit: bool


def in_container(environ: Mapping[str, str]) -> bool:
    """Whether this process runs in a container: on Kubernetes (``KUBERNETES_SERVICE_HOST`` is set in every pod) or
    in Docker (``DOCKERENV`` exists)."""
    return "KUBERNETES_SERVICE_HOST" in environ or DOCKERENV.exists()


def resolve_health_port(args: argparse.Namespace, environ: Mapping[str, str]) -> HealthPort | None:
    """The health server of ``taskfleet worker`` and ``taskfleet beat``: ``--health-port``, else
    ``TASKFLEET_HEALTH_PORT`` (both explicit), else ``DEFAULT_HEALTH_PORT_IN_CONTAINER`` in a container (not
    explicit), else None (no server).

    Raises:
        ValueError: ``TASKFLEET_HEALTH_PORT`` is not a number.
    """
    if args.health_port is not None:
        return HealthPort(int(args.health_port), explicit=True)
    if environ.get(ENV_HEALTH_PORT):
        try:
            return HealthPort(int(environ[ENV_HEALTH_PORT]), explicit=True)
        except ValueError:
            raise ValueError(f"{ENV_HEALTH_PORT} must be a port number, not {environ[ENV_HEALTH_PORT]!r}") from None
    return HealthPort(DEFAULT_HEALTH_PORT_IN_CONTAINER, explicit=False) if in_container(environ) else None


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``taskfleet worker``; returns an ``ExitCode``."""
    if not configure_cli_logging("worker", fmt=args.log_format, level=args.log_level):
        return ExitCode.BAD_CONFIG
    log = get_logger("taskfleet.worker")
    try:
        health_port = resolve_health_port(args, environ)
    except ValueError as exc:
        log.error("bad configuration", error=str(exc))
        return ExitCode.BAD_CONFIG
    if args.check:
        from taskfleet.worker.health import check_health

        port = health_port.port if health_port else DEFAULT_HEALTH_PORT_IN_CONTAINER
        ok, detail = check_health(f"http://127.0.0.1:{port}/healthz")
        print(detail)
        return ExitCode.OK if ok else ExitCode.FAILURE
    try:
        app = load_app(args.app)
        prepare_app(app, environ)
    except AppImportError as exc:
        log.error("cannot load the app", app=args.app, error=str(exc))
        return ExitCode.APP_IMPORT_ERROR
    route_structlog()  # the app's tasks may log with structlog
    try:
        overrides = connection_overrides(args, environ)
        if overrides:
            app.configure(**overrides)
        queues = tuple(q.strip() for q in args.queues.split(",") if q.strip()) if args.queues else (
            app.settings.default_queue,)
        settings = WorkerSettings(
            queues=queues, concurrency=args.concurrency, prefetch=_prefetch(args.prefetch, app),
            async_concurrency=args.async_concurrency,
            max_tasks_per_child=args.max_tasks_per_child, max_memory_per_child_mb=args.max_memory_per_child,
            drain_timeout_s=args.drain_timeout, broker_connect_timeout_s=args.broker_timeout,
            health_host=args.health_host, health_port=health_port.port if health_port else None,
            log_format=args.log_format, log_level=args.log_level, redirect_stdouts=args.redirect_stdouts,
            send_task_events=args.events or app.settings.worker_send_task_events,
            heartbeat_interval_s=None if args.without_heartbeat else args.heartbeat_interval,
            pod=pod_from_env(environ),
        )
        broker_settings = app.settings.broker_settings()
    except (ConfigurationError, ValueError) as exc:
        log.error("bad configuration", error=str(exc))
        return ExitCode.BAD_CONFIG
    if not wait_for_broker(broker_settings, settings.broker_connect_timeout_s):
        return ExitCode.BROKER_UNREACHABLE
    from taskfleet.worker.supervisor import Supervisor

    # The port is bound now (a busy one is an error before any child starts) and served once the first children
    # are forked: they never hold http.server or prometheus_client (see taskfleet.worker.health_socket).
    listening = None
    if health_port is not None:
        from taskfleet.worker.health_socket import bind_health_socket

        try:
            listening = bind_health_socket(host=settings.health_host, port=health_port.port,
                                           required=health_port.explicit, log=log)
        except ConfigurationError as exc:
            log.error("cannot serve health checks", error=str(exc))
            return ExitCode.BAD_CONFIG
    served = listening is not None
    # Beat's metrics share the worker's registry from the start; without beat, prometheus_client waits for the fork.
    metrics = WorkerMetrics() if served and args.beat else UnservedWorkerMetrics()
    try:
        beat = _embedded_beat(app, args, metrics, served=served)
    except TaskfleetError as exc:
        log.error("cannot start beat", error=str(exc))
        return ExitCode.BAD_CONFIG
    supervisor = Supervisor(app, settings, metrics)
    health = _LateHealth(supervisor, listening, settings.health_host)
    if listening is not None:
        supervisor.after_first_fork.append(health.start)
    fleet = WorkerFleet.start(supervisor, on_record=_worker_events(app, supervisor))  # before "worker starting":
    # from then on it answers control requests
    backend_url = app.settings.result_backend_url
    log.info("worker starting", worker=fleet.control.worker, app=app.name, queues=list(settings.queues),
             concurrency=settings.concurrency, prefetch=settings.prefetch, broker=mask_url(broker_settings.url),
             result_backend=mask_url(backend_url) if backend_url else None, tasks=sorted(app.tasks),
             health_port=health.port, pid=os.getpid())
    warn_unregistered(app, log)
    beat.start()
    try:
        return supervisor.run()
    finally:
        beat.stop()
        fleet.stop()
        health.stop()


class _LateHealth:
    """The worker's health server, on a socket bound before the first fork and served after it (``start``, run by
    the supervisor once its first children are forked); ``listening`` None: no server."""

    def __init__(self, supervisor: Supervisor, listening: socket.socket | None, host: str) -> None:
        self._supervisor, self._listening, self._host = supervisor, listening, host
        self._server: HealthServer | None = None

    @property
    def port(self) -> int | None:
        """The bound TCP port (the one picked for ``--health-port 0``), or None without a server."""
        return None if self._listening is None else int(self._listening.getsockname()[1])

    def start(self) -> None:
        """Create the worker's Prometheus metrics (its counts so far are its children's, re-set) and serve."""
        if self._listening is None:
            return
        from taskfleet.worker.health import HealthServer

        sup = self._supervisor
        if isinstance(sup.metrics, UnservedWorkerMetrics):  # nobody counted yet (no --beat)
            sup.metrics = WorkerMetrics()
            sup.metrics.set_children(len(sup.children))
        metrics = sup.metrics
        self._server = HealthServer(host=self._host, port=self.port or 0, liveness=sup.liveness,
                                    readiness=sup.readiness, metrics=metrics.render, listening=self._listening)
        self._server.start()

    def stop(self) -> None:
        """Stop serving and close the socket (also when the server never started)."""
        if self._server is not None:
            self._server.stop()
        elif self._listening is not None:
            self._listening.close()


#: At start, how long the worker waits for its control listener before it says it started (and goes on anyway):
#: requests published before the listener opens do not reach the worker.
CONTROL_LISTEN_TIMEOUT_S = 5.0


@dataclass
class WorkerFleet:
    """The supervisor's threads facing the fleet: its heartbeat (None with ``--without-heartbeat``) and its control
    server, each with its own fleet store on the broker."""

    control: ControlServer
    heartbeat: Heartbeat | None

    @classmethod
    def start(cls, supervisor: Supervisor, *, on_record: Sequence[RecordHook] = ()) -> WorkerFleet:
        """Start both threads (before the children are forked: their state is the supervisor's alone) and wait up
        to ``CONTROL_LISTEN_TIMEOUT_S`` for the control listener. ``on_record``: the heartbeat's hooks (worker
        events), in place before the first record."""
        from taskfleet.worker.control_server import ControlServer
        from taskfleet.worker.heartbeat import Heartbeat, worker_record

        app, broker, worker = supervisor.app, supervisor.broker, worker_id()

        def connect() -> FleetStore:
            return connect_fleet_store(broker, namespace=app.name)

        control = ControlServer(worker=worker, supervisor=supervisor, connect=connect)
        interval_s = supervisor.settings.heartbeat_interval_s
        heartbeat = None if interval_s is None else Heartbeat(
            worker=worker, record=lambda: worker_record(supervisor, worker=worker), connect=connect,
            interval_s=interval_s)
        if heartbeat is not None:
            heartbeat.on_record.extend(on_record)
        control.start()
        if heartbeat is not None:
            heartbeat.start()
        if not control.wait_listening(CONTROL_LISTEN_TIMEOUT_S):
            get_logger("taskfleet.worker").warning("control server not listening yet; inspect and control requests "
                                                   "reach this worker once it is", worker=worker,
                                                   waited_s=CONTROL_LISTEN_TIMEOUT_S)
        return cls(control=control, heartbeat=heartbeat)

    def stop(self) -> None:
        """Stop answering control requests, then remove the worker's record (a clean stop)."""
        self.control.stop()
        if self.heartbeat is not None:
            self.heartbeat.stop()


def _worker_events(app: App, supervisor: Supervisor) -> list[RecordHook]:
    """The heartbeat's hooks that emit worker-online, -heartbeat and -offline (``-E``; none without)."""
    if not supervisor.settings.send_task_events:
        return []
    from taskfleet.worker.worker_events import WorkerEvents

    return [WorkerEvents.for_app(app, supervisor.broker).emit]


class _NoBeat:
    """Stands in for the beat thread of a worker started without ``--beat``."""

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""


def _embedded_beat(app: App, args: argparse.Namespace, metrics: WorkerMetrics, *, served: bool
                   ) -> BeatThread | _NoBeat:
    """The beat replica of ``--beat`` (its metrics on the worker's /metrics when ``served``), or a stand-in. Its
    connections live in the supervisor only: children are forked without ever touching them."""
    if not args.beat:
        return _NoBeat()
    from taskfleet.worker.beat import BeatSettings, BeatThread, open_beat

    beat_metrics = BeatMetrics(metrics.registry) if served else UnservedBeatMetrics()
    return BeatThread(open_beat(app, BeatSettings(lease_s=args.beat_lease), beat_metrics))


def connection_overrides(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """Broker and backend URLs from the environment, overridden by flags; ``worker_send_task_events`` when
    ``TASKFLEET_WORKER_SEND_TASK_EVENTS`` is set (``ConfigurationError`` when it is not a switch)."""
    overrides: dict[str, Any] = dict(settings_from_env(environ))
    if ENV_WORKER_SEND_TASK_EVENTS in environ:
        overrides.update(read_config({ENV_WORKER_SEND_TASK_EVENTS: environ[ENV_WORKER_SEND_TASK_EVENTS]},
                                     namespace=DEFAULT_NAMESPACE, keywords={"worker_send_task_events"}))
    flags = {"broker": args.broker, "broker_management_url": args.broker_management_url,
             "result_backend": args.result_backend}
    overrides.update({name: value for name, value in flags.items() if value})
    return overrides


def wait_for_broker(settings: BrokerSettings, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    broker = brokers.connect(settings)
    try:
        while True:
            try:
                broker.ping()
                return True
            except BrokerError as exc:
                if time.monotonic() >= deadline:
                    get_logger("taskfleet.worker").error("broker unreachable", broker=mask_url(settings.url),
                                                         waited_s=timeout_s, error=str(exc))
                    return False
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    finally:
        broker.close()


def _prefetch(flag: int | None, app: App) -> int:
    """``--prefetch``, else the default for the app's broker (``default_prefetch``: larger on RabbitMQ)."""
    return flag if flag is not None else default_prefetch(app.settings.broker_url or "")
