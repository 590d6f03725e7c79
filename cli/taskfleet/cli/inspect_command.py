"""``taskfleet inspect COMMAND``: ask the workers a read-only question (``app.control.inspect().<command>()``) and
print each one's answer. Exit status 0 when every worker asked answered, 1 when none answered within --timeout (or a
worker named with --worker did not, or one refused). ``--json`` prints ``{worker: answer}``, what the Python API
returns (``{}`` when nobody answered)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.markup import escape

from taskfleet.cli import console
from taskfleet.cli.fleet_commands import (
    Outcome,
    add_connection_flags,
    add_target_flags,
    fleet_app,
    missing_line,
    no_answer,
    outcome,
    summary,
)
from taskfleet.fleet.protocol import INSPECT_COMMANDS, replies_by_worker

#: The commands whose answer is a list of tasks, and how each task's line names its time.
TASK_LISTS = ("active", "reserved", "scheduled")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet inspect`` (``name``) on the ``taskfleet`` parser."""
    commands = "; ".join(f"{c}: {what}" for c, what in INSPECT_COMMANDS.items())
    p = subparsers.add_parser(name, help=summary, description=f"{__doc__} Commands: {commands}.")
    p.add_argument("question", choices=tuple(INSPECT_COMMANDS), metavar="COMMAND",
                   help="one of " + ", ".join(INSPECT_COMMANDS))
    add_target_flags(p)
    p.add_argument("--json", action="store_true", help="print {worker: answer} as one JSON object")
    add_connection_flags(p)
    p.set_defaults(handler=run)


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet inspect``: 0 when the workers answered, 1 otherwise."""
    app = fleet_app(args, environ)
    try:
        replies = app.control.broadcast(args.question, destination=args.workers, reply=True, timeout=args.timeout)
    finally:
        app.close()
    found = outcome(replies, args.workers)
    if args.json:
        console.print_json(replies_by_worker(found.replies))
    else:
        for line in answer_lines(args.question, found, now=time.time()):
            console.say(line)
    if not found.replies:
        console.fail(no_answer(args.timeout, app))
    for worker in found.missing:
        console.fail(missing_line(worker, args.timeout))
    return found.exit_code


def answer_lines(question: str, found: Outcome, *, now: float) -> list[str]:
    """The text of ``inspect question`` (rich markup, values escaped): per worker a heading with its answer in
    short, then the details indented."""
    lines: list[str] = []
    for reply in found.replies:
        who = f"[bold]{escape(reply.worker)}[/]"
        if not reply.ok:
            lines.append(f"{who}: [red]error[/] {escape(reply.error or 'refused')}")
            continue
        heading, details = describe(question, reply.result, now=now)
        lines.append(f"{who}: {escape(heading)}")
        lines += [f"  {escape(d)}" for d in details]
    return lines


def describe(question: str, result: Any, *, now: float) -> tuple[str, list[str]]:
    """One worker's answer to ``question``: a short heading (``pong``, ``2 active``) and detail lines."""
    if question in TASK_LISTS and isinstance(result, list):
        return f"{len(result)} {question}", [task_line(question, item, now=now) for item in result]
    if question in ("registered", "revoked") and isinstance(result, list):
        noun = "task" if question == "registered" else "revoked id"
        return console.plural(len(result), noun), [summary(item) for item in result]
    if question == "stats" and isinstance(result, Mapping):
        return "stats", flatten(result)
    return summary(result), []


def task_line(question: str, item: Any, *, now: float) -> str:
    """One task of an ``active``, ``reserved`` or ``scheduled`` answer: its id, name and arguments when known, how
    long it has run (active) or when it is due (scheduled), its queue and the child's pid. Takes Celery's shape too
    (``{"eta", "request": {...}}``)."""
    if not isinstance(item, Mapping):
        return summary(item)
    inner = item.get("request")
    request: Mapping[str, Any] = inner if isinstance(inner, Mapping) else item
    parts = [str(request.get("id") or request.get("task_id") or "?")]
    name = request.get("name") or request.get("task")
    if name:
        parts.append(str(name))
    args, kwargs = request.get("args"), request.get("kwargs")
    if args or kwargs:
        parts.append(call_text(args or [], kwargs or {}))
    since = request.get("time_start") or request.get("since")
    if question == "active" and isinstance(since, (int, float)):
        parts.append(f"running {max(now - since, 0.0):.1f}s")
    eta = item.get("eta") or request.get("eta")
    if question == "scheduled" and eta is not None:
        parts.append(f"eta {eta_text(eta, now=now)}")
    delivery = request.get("delivery_info")
    if isinstance(delivery, Mapping) and delivery.get("routing_key"):
        parts.append(f"queue {delivery['routing_key']}")
    count = request.get("delivery_count")
    if isinstance(count, int) and count > 1:
        parts.append(f"delivery {count}")
    pid = request.get("worker_pid") or request.get("pid")
    if pid:
        parts.append(f"pid {pid}")
    return "  ".join(parts)


def call_text(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """``(1, 'a', n=2)``: a task's arguments as a call shows them, cut at 80 characters."""
    text = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    return f"({text[:77]}...)" if len(text) > 80 else f"({text})"


def eta_text(eta: Any, *, now: float) -> str:
    """An ETA in Unix seconds as ``in 12.0s``; any other form (Celery's ISO 8601 string) as it is."""
    if isinstance(eta, (int, float)):
        delta = eta - now
        return f"in {delta:.1f}s" if delta >= 0 else f"{-delta:.1f}s ago"
    return str(eta)


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``stats`` as ``key: value`` lines, nested objects as dotted keys (``pool.concurrency: 4``)."""
    lines: list[str] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            lines += flatten(value, f"{name}.")
        else:
            lines.append(f"{name}: {value_text(value)}")
    return lines


def value_text(value: Any) -> str:
    """A ``stats`` value: numbers as they are, None as ``-``, a list of plain values comma-separated, anything else
    as ``summary`` writes it."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value) or "-"
    return summary(value)
