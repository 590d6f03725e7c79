"""``taskfleet control COMMAND ...``: change the workers at runtime (``app.control.rate_limit(...)`` and the rest),
collect their replies within --timeout and print each one's, ok or error. Celery's spellings (``rate_limit``,
``add_consumer``...) work as well as the hyphenated ones. Exit status 0 when every worker asked said ok, 1 when one
refused, one named with --worker did not answer, or none answered. A change lasts until the worker stops."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rich.markup import escape

from taskfleet.app import App
from taskfleet.cli import console
from taskfleet.cli.broker_commands import positive_int
from taskfleet.cli.fleet_commands import (
    Outcome,
    add_connection_flags,
    add_target_flags,
    fleet_app,
    missing_line,
    no_answer,
    outcome,
    positive_seconds,
    replies_json,
    reply_line,
)
from taskfleet.fleet.protocol import CONTROL_COMMANDS, ControlReply

#: Words that mean "no limit" for ``rate-limit`` and ``time-limit``.
NO_LIMIT = ("none", "off", "")

Send = Callable[[App, argparse.Namespace], list[ControlReply]]


@dataclass(frozen=True, slots=True)
class Action:
    """One ``control`` command: its flags, and the ``app.control`` call that sends it (replies wanted)."""

    name: str  # the canonical (Celery) name
    add_arguments: Callable[[argparse.ArgumentParser], None]
    send: Send

    @property
    def spelling(self) -> str:
        return self.name.replace("_", "-")


def _rate_limit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK", help="task name, e.g. billing.charge")
    p.add_argument("rate", metavar="RATE", type=_limit_text,
                   help="at most this many starts per worker: 10/s, 100/m, 1000/h; 'none' removes the limit")


def _time_limit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK", help="task name, e.g. billing.charge")
    p.add_argument("soft", metavar="SOFT", type=_limit_seconds,
                   help="seconds before SoftTimeLimitExceeded is raised in the task ('none': no soft limit)")
    p.add_argument("hard", metavar="HARD", type=_limit_seconds, nargs="?", default=None,
                   help="seconds before the child is killed ('none' or left out: no hard limit)")


def _queue_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("queue", metavar="QUEUE", help="queue name")


def _pool_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("n", metavar="N", type=positive_int, nargs="?", default=1, help="how many children (default 1)")


def _shutdown_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", action="store_true",
                   help="without --worker: do not ask before stopping every worker of the app")


def _rate_limit(app: App, a: argparse.Namespace) -> list[ControlReply]:
    return app.control.rate_limit(a.task, a.rate, destination=a.workers, reply=True, timeout=a.timeout)


def _time_limit(app: App, a: argparse.Namespace) -> list[ControlReply]:
    return app.control.time_limit(a.task, a.soft, a.hard, destination=a.workers, reply=True, timeout=a.timeout)


def _add_consumer(app: App, a: argparse.Namespace) -> list[ControlReply]:
    return app.control.add_consumer(a.queue, destination=a.workers, reply=True, timeout=a.timeout)


def _cancel_consumer(app: App, a: argparse.Namespace) -> list[ControlReply]:
    return app.control.cancel_consumer(a.queue, destination=a.workers, reply=True, timeout=a.timeout)


def _pool_grow(app: App, a: argparse.Namespace) -> list[ControlReply]:
    return app.control.pool_grow(a.n, destination=a.workers, reply=True, timeout=a.timeout)


def _pool_shrink(app: App, a: argparse.Namespace) -> list[ControlReply]:
    return app.control.pool_shrink(a.n, destination=a.workers, reply=True, timeout=a.timeout)


def _shutdown(app: App, a: argparse.Namespace) -> list[ControlReply]:
    return app.control.shutdown(destination=a.workers, reply=True, timeout=a.timeout)


ACTIONS: tuple[Action, ...] = (
    Action("rate_limit", _rate_limit_arguments, _rate_limit),
    Action("time_limit", _time_limit_arguments, _time_limit),
    Action("add_consumer", _queue_arguments, _add_consumer),
    Action("cancel_consumer", _queue_arguments, _cancel_consumer),
    Action("pool_grow", _pool_arguments, _pool_grow),
    Action("pool_shrink", _pool_arguments, _pool_shrink),
    Action("shutdown", _shutdown_arguments, _shutdown),
)
ACTIONS_BY_NAME: Mapping[str, Action] = {a.name: a for a in ACTIONS}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet control`` (``name``) and its commands on the ``taskfleet`` parser."""
    p = subparsers.add_parser(name, help=summary, description=__doc__)
    commands = p.add_subparsers(dest="action", required=True, metavar="COMMAND")
    for action in ACTIONS:
        what = CONTROL_COMMANDS[action.name]
        leaf = commands.add_parser(action.spelling, aliases=[action.name] if action.name != action.spelling else [],
                                   help=what,
                                   description=what[:1].upper() + what[1:] + ".")
        action.add_arguments(leaf)
        add_target_flags(leaf)
        leaf.add_argument("--json", action="store_true",
                          help='print {worker: {"ok", "result", "error"}} as one JSON object')
        add_connection_flags(leaf)
        leaf.set_defaults(handler=run, control=action.name)


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet control COMMAND``: 0 when every worker asked said ok, 1 otherwise."""
    action = ACTIONS_BY_NAME[args.control]
    if action.name == "shutdown" and not args.workers and not args.yes:
        console.require_terminal("refusing to stop every worker of the app without asking")
        if not console.ask("Stop [bold]every[/] worker of the app (they drain first)?"):
            raise console.CommandFailed("nothing stopped")
    app = fleet_app(args, environ)
    try:
        replies = action.send(app, args)
    finally:
        app.close()
    found = outcome(replies, args.workers)
    print_outcome(found, as_json=args.json)
    if not found.replies:
        console.fail(no_answer(args.timeout, app))
    for worker in found.missing:
        console.fail(missing_line(worker, args.timeout))
    return found.exit_code


def print_outcome(found: Outcome, *, as_json: bool) -> None:
    """Each worker's reply on its line (``worker  ok  message``), or ``--json``'s object."""
    if as_json:
        console.print_json(replies_json(found))
        return
    width = max((len(r.worker) for r in found.replies), default=0)
    for reply in found.replies:
        worker, status, said = reply_line(reply)
        colour = "green" if reply.ok else "red"
        console.say(f"[bold]{escape(worker):<{width}}[/]  [{colour}]{status}[/]  {escape(said)}".rstrip())


def _limit_text(text: str) -> str | None:
    return None if text.strip().lower() in NO_LIMIT else text.strip()


def _limit_seconds(text: str) -> float | None:
    """A time limit in seconds, or ``none`` for no limit."""
    return None if text.strip().lower() in NO_LIMIT else positive_seconds(text)
