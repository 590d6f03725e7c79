"""``taskfleet check -A APP``: load the app as a worker does and print its effective configuration (credentials
masked), its task modules, tasks and beat entries, what each Celery setting found in its configuration is in
Taskfleet, and any problem a worker would report at start. Exit status 0 when the app loads and its configuration is
valid (warnings included), 1 otherwise."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from taskfleet.errors import TaskfleetError
from taskfleet.worker.app_report import AppReport, app_report
from taskfleet.worker.loader import load_app, prepare_app
from taskfleet.worker.worker_command import connection_overrides


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet check`` (``name``) on the ``taskfleet`` parser."""
    p = subparsers.add_parser(name, help=summary, description=__doc__)
    p.add_argument("-A", "--app", required=True, help="module:attribute of your App, or a module holding one App")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--broker", default=None, help="broker URL (overrides the app and TASKFLEET_BROKER_URL)")
    p.add_argument("--broker-management-url", default=None, metavar="URL", help="RabbitMQ management API URL")
    p.add_argument("--result-backend", default=None, help="result backend URL (overrides app and env)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet check``: 0 when the app loads with a valid configuration, 1 otherwise."""
    try:
        app = load_app(args.app)
        modules = prepare_app(app, environ)
        overrides = connection_overrides(args, environ)
        if overrides:
            app.configure(**overrides)
        report = app_report(app, modules)
    except (TaskfleetError, TypeError, ValueError) as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        else:
            print(f"taskfleet check: {args.app}: {exc}")
        return 1
    if args.json:
        print(json.dumps({"ok": True, **report.to_json()}, default=str, indent=2))
    else:
        print(render(report))
    return 0


def render(report: AppReport) -> str:
    """``report`` as the text ``taskfleet check`` prints."""
    width = max(len(name) for name in report.settings)
    lines = [f"app {report.name}", "", "settings:"]
    lines += [f"  {name:<{width}}  {value}" for name, value in report.settings.items()]
    lines += ["", f"task modules ({len(report.modules)}):"] + [f"  {m}" for m in report.modules]
    lines += ["", f"tasks ({len(report.tasks)}):"] + [f"  {t}" for t in report.tasks]
    lines += ["", f"beat entries ({len(report.beat_entries)}):"]
    lines += [f"  {name} -> {task}" for name, task in report.beat_entries.items()]
    if report.celery:
        lines += ["", f"Celery settings found ({len(report.celery)}; Taskfleet does not read them):"]
        lines += [f"  {c.key} [{c.source}]: {c.explanation}" for c in report.celery]
    lines += ["", f"warnings ({len(report.warnings)}):"] + [f"  {w}" for w in report.warnings]
    return "\n".join(lines)
