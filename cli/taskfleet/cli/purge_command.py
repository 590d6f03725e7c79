"""``taskfleet purge <queue>``: delete a queue's ready and delayed messages, after asking with the counts."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from rich.markup import escape

from taskfleet.brokers.base import QueueDepth
from taskfleet.cli import console
from taskfleet.cli.broker_commands import app_from_args


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet purge``."""
    app = app_from_args(args, environ)
    try:
        broker = app.broker
        if not args.yes:
            console.require_terminal(f"refusing to purge queue {args.queue!r} without asking")
            if not console.ask(purge_question(args.queue, broker.queue_depth(args.queue))):
                return console.fail("aborted: nothing deleted")
        count = broker.purge(args.queue)
    finally:
        app.close()
    console.say(f"purged {console.plural(count, 'message')} from {escape(args.queue)}")
    return 0


def purge_question(queue: str, depth: QueueDepth) -> str:
    """What ``purge`` asks (rich markup), with the counts it is about to delete."""
    ready = console.plural(depth.ready, "ready message")
    # A due message was sent delayed and is still stored as one until a fetch moves it: purge deletes it with them.
    delayed = (console.plural(depth.delayed + depth.due, "delayed message") if depth.delayed_known
               else "every delayed message (not counted)")
    return (f"Delete {ready} and {delayed} of queue [bold]{escape(queue)}[/]? "
            "[dim](in-flight messages are left to their workers, dead letters are kept)[/]")

