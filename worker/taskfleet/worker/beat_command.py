"""``taskfleet beat``: run a beat replica (any number of them may run), or ``--list`` the schedule."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from types import FrameType

from taskfleet.app import App
from taskfleet.errors import ConfigurationError, TaskfleetError
from taskfleet.schedules import next_runs
from taskfleet.urls import mask_url
from taskfleet.worker.app_report import warn_unregistered
from taskfleet.worker.beat import BeatSettings, open_beat
from taskfleet.worker.exitcodes import ExitCode
from taskfleet.worker.loader import AppImportError, load_app, prepare_app
from taskfleet.worker.logging import configure_cli_logging, get_logger, route_structlog
from taskfleet.worker.metrics import BeatMetrics, UnservedBeatMetrics
from taskfleet.worker.settings import DEFAULT_BROKER_CONNECT_TIMEOUT_S
from taskfleet.worker.worker_command import add_beat_flags, connection_overrides, resolve_health_port, wait_for_broker

#: Fire times per entry that ``--list`` shows.
LIST_COUNT = 5


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet beat`` (``name``) on the ``taskfleet`` parser."""
    p = subparsers.add_parser(name, help=summary, description=__doc__)
    p.add_argument("-A", "--app", required=True, help="module:attribute of your App, or a module holding one App")
    p.add_argument("--list", action="store_true",
                   help=f"print the schedule with the next {LIST_COUNT} fire times of each entry, then exit")
    add_beat_flags(p)
    p.add_argument("--broker", default=None, help="broker URL (overrides the app and TASKFLEET_BROKER_URL)")
    p.add_argument("--broker-management-url", default=None, metavar="URL",
                   help="RabbitMQ management API; overrides TASKFLEET_BROKER_MANAGEMENT_URL")
    p.add_argument("--result-backend", default=None, help="result backend URL (overrides app and env)")
    p.add_argument("--broker-timeout", type=float, default=DEFAULT_BROKER_CONNECT_TIMEOUT_S, metavar="S",
                   help="give up (exit 4) when the broker does not answer within S seconds at start")
    p.add_argument("--health-port", type=int, default=None, help="serve /healthz, /readyz, /metrics")
    p.add_argument("--health-host", default="0.0.0.0", help="address of the health server")
    p.add_argument("--log-format", choices=["json", "console", "auto"], default="auto")
    p.add_argument("-l", "--log-level", default="info")
    p.set_defaults(handler=run)


def print_schedule(app: App, now: datetime | None = None) -> None:
    """The ``--list`` output: each entry, what it sends, and its next fire times in the app's time zone."""
    now = now or datetime.now(UTC)
    if not app.periodic_tasks:
        print(f"app {app.name!r} has no periodic tasks")
        return
    print(f"schedule of app {app.name!r} (time zone {app.timezone}), next {LIST_COUNT} fire times:")
    for entry in app.periodic_tasks.values():
        sig = entry.signature
        print(f"{entry.name}: {entry.schedule} -> {sig!r} queue={sig.queue or '(task default)'} "
              f"catch_up={entry.catch_up}")
        for when in next_runs(entry.schedule, now, LIST_COUNT, app.tzinfo):
            print(f"    {when.astimezone(app.tzinfo).isoformat()}")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``taskfleet beat``; returns an ``ExitCode``."""
    if not configure_cli_logging("beat", fmt=args.log_format, level=args.log_level):
        return ExitCode.BAD_CONFIG
    log = get_logger("taskfleet.beat")
    try:
        app = load_app(args.app)
        prepare_app(app, environ)
    except AppImportError as exc:
        log.error("cannot load the app", app=args.app, error=str(exc))
        return ExitCode.APP_IMPORT_ERROR
    route_structlog()  # the app's code may log with structlog
    if args.list:
        print_schedule(app)
        return ExitCode.OK
    try:
        overrides = connection_overrides(args, environ)
        if overrides:
            app.configure(**overrides)
        settings = BeatSettings(lease_s=args.beat_lease)
        broker_settings = app.settings.broker_settings()
    except (ConfigurationError, ValueError) as exc:
        log.error("bad configuration", error=str(exc))
        return ExitCode.BAD_CONFIG
    if not wait_for_broker(broker_settings, args.broker_timeout):
        return ExitCode.BROKER_UNREACHABLE
    port = resolve_health_port(args, environ)
    # prometheus_client is imported only when something serves the metrics (see taskfleet.worker.metrics).
    metrics = BeatMetrics() if port is not None else UnservedBeatMetrics()
    try:
        beat = open_beat(app, settings, metrics)
    except TaskfleetError as exc:
        log.error("cannot open the beat store", error=str(exc))
        return ExitCode.BAD_CONFIG
    health = None
    if port is not None:
        from taskfleet.worker.health import start_health_server

        health = start_health_server(host=args.health_host, port=port, liveness=beat.liveness,
                                     readiness=beat.readiness, metrics=metrics.render, log=log)
        if health is None:
            return ExitCode.BAD_CONFIG
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("beat process starting", app=app.name, broker=mask_url(broker_settings.url), pid=os.getpid(),
             health_port=health.port if health else None, entries=sorted(app.periodic_tasks))
    warn_unregistered(app, log)
    try:
        beat.run(stop)
    finally:
        beat.store.close()
        app.close()
        if health is not None:
            health.stop()
    return ExitCode.OK
