"""``taskfleet revoke ID...``: revoke tasks (``app.control.revoke``). The revocation is stored in the broker (for
--expires seconds, default the app's result expiry), so a worker started later honours it too, and is sent to the
running workers, whose answers are printed. A queued or delayed revoked task never runs and ends REVOKED; with
--terminate, a running one's child gets --signal (then SIGKILL after a grace). Exit status 0 once stored (a worker
that did not answer in time still reads it from the broker), 1 when a worker refused it."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from taskfleet.cli import console
from taskfleet.cli.control_command import print_outcome
from taskfleet.cli.fleet_commands import (
    EXIT_FAILED,
    EXIT_OK,
    Outcome,
    add_connection_flags,
    add_target_flags,
    fleet_app,
    outcome,
    positive_seconds,
    replies_json,
    seconds,
    where,
)
from taskfleet.fleet.revocations import DEFAULT_TERMINATE_SIGNAL, signal_number


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet revoke`` (``name``) on the ``taskfleet`` parser."""
    p = subparsers.add_parser(name, help=summary, description=__doc__)
    p.add_argument("task_ids", nargs="+", metavar="ID", help="task id")
    p.add_argument("--terminate", action="store_true", help="also signal the child running the task, if one is")
    p.add_argument("--signal", type=_signal, default=DEFAULT_TERMINATE_SIGNAL, metavar="SIGNAL",
                   help="with --terminate: the signal (name or number) sent first")
    p.add_argument("--expires", type=positive_seconds, default=None, metavar="S",
                   help="forget the revocation after S seconds (default: the app's result_expires_s)")
    add_target_flags(p)
    p.add_argument("--json", action="store_true",
                   help='print {"revoked", "terminate", "signal", "replies": {worker: {"ok", "result", "error"}}}')
    add_connection_flags(p)
    p.set_defaults(handler=run)


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet revoke``: 0 once stored, 1 when a worker refused it."""
    app = fleet_app(args, environ)
    try:
        replies = app.control.revoke(args.task_ids, terminate=args.terminate, signal=args.signal,
                                     expires_s=args.expires, destination=args.workers, reply=True,
                                     timeout=args.timeout)
    finally:
        app.close()
    found = outcome(replies, args.workers)
    if args.json:
        console.print_json(revoke_json(args.task_ids, terminate=args.terminate, signal=args.signal, found=found))
    else:
        console.say(stored_line(len(args.task_ids), terminate=args.terminate, signal=args.signal))
        print_outcome(found, as_json=False)
        if not found.replies:
            console.say(f"[dim]no worker answered within {seconds(args.timeout)} ({where(app)}); the workers read "
                        "the revocation from the broker when they start and at each heartbeat[/]")
    return EXIT_FAILED if found.refused else EXIT_OK


def stored_line(count: int, *, terminate: bool, signal: str) -> str:
    """The first line: how many ids were revoked, and whether running ones get a signal."""
    how = f", terminating with {signal} where running" if terminate else ""
    return f"revoked {console.plural(count, 'task')}{how} (stored in the broker)"


def revoke_json(task_ids: list[str], *, terminate: bool, signal: str, found: Outcome) -> dict[str, Any]:
    """``revoke --json``: the ids, the terminate options and each worker's reply."""
    return {"revoked": list(task_ids), "terminate": terminate, "signal": signal, "replies": replies_json(found)}


def _signal(text: str) -> str:
    """A signal name as the workers are sent it (``TERM``, ``15`` -> ``SIGTERM``); a bad one is a usage error."""
    import signal as signals

    from taskfleet.errors import ControlError

    try:
        return signals.Signals(signal_number(text)).name
    except ControlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
