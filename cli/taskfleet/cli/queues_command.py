"""``taskfleet queues``: a depth table per queue (ready, in-flight, delayed, dead, due), or ``--json``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from taskfleet.brokers.base import QueueDepth
from taskfleet.cli import console
from taskfleet.cli.broker_commands import app_from_args

UNKNOWN = "?"


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet queues``."""
    app = app_from_args(args, environ)
    try:
        broker = app.broker
        depths = {queue: broker.queue_depth(queue) for queue in broker.queues()}
    finally:
        app.close()
    if args.json:
        console.print_json({queue: depth_json(depth) for queue, depth in depths.items()})
    elif not depths:
        console.say("no queues yet [dim](a queue appears when the first message is sent to it)[/]")
    else:
        console.out.print(depth_table(depths))
    return 0


def depth_json(depth: QueueDepth) -> dict[str, Any]:
    """One queue of ``queues --json``: the five counts, and whether the broker could count in-flight and delayed
    messages (when it could not, their count is 0; ``due`` is always counted)."""
    return {"ready": depth.ready, "in_flight": depth.in_flight, "delayed": depth.delayed, "dead": depth.dead,
            "due": depth.due, "in_flight_known": depth.in_flight_known, "delayed_known": depth.delayed_known}


def depth_row(queue: str, depth: QueueDepth) -> tuple[str, str, str, str, str, str]:
    """The cells of one queue's row: QUEUE, READY, IN-FLIGHT, DELAYED, DEAD, DUE (last, so the older columns keep
    their places); ``?`` for a count the broker does not know."""
    return (queue, str(depth.ready), str(depth.in_flight) if depth.in_flight_known else UNKNOWN,
            str(depth.delayed) if depth.delayed_known else UNKNOWN, str(depth.dead), str(depth.due))


def depth_table(depths: Mapping[str, QueueDepth]) -> Table:
    """The ``queues`` table, queues in the broker's order; dead letters stand out in red."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("QUEUE", style="bold", overflow="fold")
    for title in ("READY", "IN-FLIGHT", "DELAYED", "DEAD", "DUE"):
        table.add_column(title, justify="right")
    unknown = False
    for queue, depth in depths.items():
        cells = depth_row(queue, depth)
        unknown = unknown or UNKNOWN in cells
        dead = f"[red]{cells[4]}[/]" if depth.dead else cells[4]
        table.add_row(escape(cells[0]), *cells[1:4], dead, cells[5])
    if unknown:
        table.caption = (f"{UNKNOWN}: not counted by this broker (RabbitMQ counts in-flight messages only with "
                         "--broker-management-url, and delayed ones never)")
    return table

