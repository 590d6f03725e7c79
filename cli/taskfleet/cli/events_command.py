"""``taskfleet events``: the app's task and worker events, live. A view refreshed in place (tasks per second,
failures, per task its counts and runtimes, the workers seen), or ``--json``: one JSON object per line as events
arrive, for scripts. Ctrl-C ends it (exit 0).

Events come from the app's event stream (``FleetStore.read_events``): workers emit them with ``taskfleet worker
-E``, publishers ``task-sent`` with ``task_send_sent_event`` (docs/events.md). From now on by default;
``--from-start`` reads the history the stream keeps first. The sums are ``taskfleet.fleet.event_stats``'s.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from taskfleet.app import App
from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.cli import console
from taskfleet.cli.broker_commands import app_from_args
from taskfleet.errors import DecodeError
from taskfleet.fleet.event_stats import TASK_COLUMNS, EventStats, TaskStats
from taskfleet.fleet.events import FleetEvent

#: Seconds one read waits for new events before the view is redrawn anyway.
READ_WAIT_S = 0.5
#: Events read per call.
READ_LIMIT = 1000
#: Rows of the per-task table (the busiest tasks; the caption says how many more).
MAX_TASK_ROWS = 30
_HEADINGS = {"task-sent": "SENT", "task-received": "RECEIVED", "task-started": "STARTED",
             "task-succeeded": "SUCCEEDED", "task-failed": "FAILED", "task-retried": "RETRIED",
             "task-revoked": "REVOKED", "task-dead-lettered": "DEAD"}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet events`` on the ``taskfleet`` parser."""
    p = subparsers.add_parser(name, help=summary, description=__doc__)
    p.add_argument("-A", "--app", default=None, help="module:attribute of your App (its name and broker)")
    p.add_argument("--app-name", default=None, metavar="NAME",
                   help="the app's name, without importing it (with --broker or TASKFLEET_BROKER_URL)")
    p.add_argument("--broker", default=None, help="broker URL (default: the app's, else TASKFLEET_BROKER_URL)")
    p.add_argument("--broker-management-url", default=None, metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print each event as one JSON object per line")
    p.add_argument("--from-start", action="store_true",
                   help="first read the events the stream keeps (up to the app's events_max_len)")
    p.add_argument("--refresh", type=float, default=1.0, metavar="S", help="seconds between redraws of the view")
    p.set_defaults(handler=run)


def events_app(args: argparse.Namespace, environ: Mapping[str, str]) -> App:
    """The app whose events to read: ``-A``'s, or a blank one named ``--app-name``."""
    if args.app is None and args.app_name is None:
        raise console.CommandFailed("name the app: -A module:app, or --app-name NAME (events are per app)")
    app = app_from_args(args, environ)
    if args.app is None:
        app.name = args.app_name
    return app


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet events``."""
    app = events_app(args, environ)
    store = connect_fleet_store(app.broker, namespace=app.name, events_max_len=app.settings.events_max_len)
    try:
        cursor = None if args.from_start else store.events_end()
        if args.json:
            _print_lines(store, cursor)
        else:
            _live(store, cursor, app.name, refresh_s=max(0.1, args.refresh))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `taskfleet events --json | head`: the reader is done
        sys.stderr.close()
    finally:
        store.close()
        app.close()
    return 0


def _decode(raw: list[bytes]) -> list[tuple[bytes, FleetEvent]]:
    decoded = []
    for item in raw:
        try:
            decoded.append((item, FleetEvent.from_json(item)))
        except (DecodeError, ValueError):
            continue  # not an event: skipped, as every reader does
    return decoded


def _print_lines(store: FleetStore, cursor: str | None) -> None:
    while True:
        raw, cursor = store.read_events(cursor, limit=READ_LIMIT, timeout_s=READ_WAIT_S)
        for item, _ in _decode(raw):
            sys.stdout.write(item.decode() + "\n")
        if raw:
            sys.stdout.flush()


def _live(store: FleetStore, cursor: str | None, app_name: str, *, refresh_s: float) -> None:
    stats = EventStats()
    with Live(render(stats, app_name, now=time.time()), console=console.out, auto_refresh=False,
              transient=False) as live:
        next_draw = 0.0
        while True:
            raw, cursor = store.read_events(cursor, limit=READ_LIMIT, timeout_s=min(READ_WAIT_S, refresh_s))
            stats.add_all(event for _, event in _decode(raw))
            if time.monotonic() >= next_draw:
                live.update(render(stats, app_name, now=time.time()), refresh=True)
                next_draw = time.monotonic() + refresh_s


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"


def task_row(task: TaskStats) -> list[str]:
    """The cells of one task's row: name, each count of ``TASK_COLUMNS``, then mean, p50, p95 runtime."""
    return [task.name, *(str(task.counts[c]) for c in TASK_COLUMNS),
            _seconds(task.mean_s), _seconds(task.p50_s), _seconds(task.p95_s)]


def summary_line(stats: EventStats, app_name: str, *, now: float) -> str:
    """The view's first line: the app, the rates and the totals."""
    online = sum(1 for w in stats.workers.values() if w.online)
    finished = sum(stats.totals[kind] for kind in ("task-succeeded", "task-failed", "task-dead-lettered",
                                                   "task-revoked"))
    return (f"app {app_name}: {stats.rate(now):.1f} tasks/s, {stats.failure_rate(now):.1f} failures/s "
            f"(last {stats.window_s:.0f} s); {finished} finished, {stats.failures} failed; "
            f"{online} worker(s) online; {sum(stats.totals.values())} events")


def render(stats: EventStats, app_name: str, *, now: float) -> Group:
    """The whole view: the summary line, the per-task table and the workers table."""
    parts: list[Any] = [Text(summary_line(stats, app_name, now=now), style="bold")]
    tasks = sorted(stats.tasks(), key=lambda t: -sum(t.counts.values()))
    if tasks:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("TASK", style="bold", overflow="fold")
        for column in TASK_COLUMNS:
            table.add_column(_HEADINGS[column], justify="right")
        for title in ("MEAN", "P50", "P95"):
            table.add_column(title, justify="right")
        for task in tasks[:MAX_TASK_ROWS]:
            cells = task_row(task)
            failed = task.counts["task-failed"] + task.counts["task-dead-lettered"]
            row = [escape(c) for c in cells]
            if failed:
                row[5] = f"[red]{row[5]}[/]"
                row[8] = f"[red]{row[8]}[/]"
            table.add_row(*row)
        if len(tasks) > MAX_TASK_ROWS:
            table.caption = f"and {len(tasks) - MAX_TASK_ROWS} more tasks"
        parts.append(table)
    else:
        parts.append(Text("no task events yet (workers emit them with taskfleet worker -E)", style="dim"))
    if stats.workers:
        workers = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for title in ("WORKER", "STATE", "ACTIVE", "PROCESSED", "LAST EVENT"):
            workers.add_column(title, justify="left" if title in ("WORKER", "STATE") else "right")
        for worker in sorted(stats.workers.values(), key=lambda w: w.id):
            workers.add_row(escape(worker.id), "online" if worker.online else "[dim]offline[/]",
                            "-" if worker.active is None else str(worker.active),
                            "-" if worker.processed is None else str(worker.processed),
                            f"{max(0.0, now - worker.last_seen):.0f}s ago")
        parts.append(workers)
    return Group(*parts)

