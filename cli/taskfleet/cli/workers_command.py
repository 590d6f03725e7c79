"""``taskfleet workers``: the live workers of an app, from their latest heartbeats (``app.control.workers()``).

A worker is listed while its heartbeat record lives in the broker: a worker that stops (or dies) leaves the list
after about three missed heartbeats, by itself. ``--json`` prints the records as the workers wrote them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from taskfleet.cli import console
from taskfleet.cli.fleet_commands import add_connection_flags, ago, fleet_app, where
from taskfleet.fleet.records import WorkerRecord

COLUMNS = ("WORKER", "POD", "QUEUES", "BUSY", "PROCESSED", "FAILED", "LAST SEEN")
NO_POD = "-"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet workers`` (``name``) on the ``taskfleet`` parser."""
    p = subparsers.add_parser(name, help=summary, description=__doc__)
    p.add_argument("--json", action="store_true", help="print the workers' heartbeat records as one JSON list")
    add_connection_flags(p)
    p.set_defaults(handler=run)


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet workers``: 0, with or without live workers (an empty fleet is not an error)."""
    app = fleet_app(args, environ)
    try:
        records = app.control.workers()
    finally:
        app.close()
    if args.json:
        console.print_json([record_json(r) for r in records])
    elif not records:
        console.say(f"no live workers [dim]({escape(where(app))}: a worker appears with its first heartbeat)[/]")
    else:
        console.out.print(workers_table(records, now=time.time()))
    return 0


def record_json(record: WorkerRecord) -> dict[str, Any]:
    """One worker of ``--json``: its heartbeat record as it is stored (``WorkerRecord.to_json``)."""
    data: dict[str, Any] = json.loads(record.to_json())
    return data


def pod_cell(record: WorkerRecord) -> str:
    """``namespace/name`` of the worker's pod, ``-`` outside Kubernetes."""
    return f"{record.pod.namespace}/{record.pod.name}" if record.pod else NO_POD


def worker_row(record: WorkerRecord, *, now: float) -> tuple[str, ...]:
    """The cells of one worker: id (``(draining)`` while it stops), pod, queues, busy/concurrency, processed,
    failed, and how long ago its last heartbeat was sent (``now``: Unix seconds)."""
    worker = f"{record.id} (draining)" if record.draining else record.id
    return (worker, pod_cell(record), ",".join(record.queues), f"{record.busy}/{record.concurrency}",
            str(record.processed), str(record.failed), ago(now - record.sent_at))


def workers_table(records: Sequence[WorkerRecord], *, now: float) -> Table:
    """The ``workers`` table; failures stand out in red, a worker late with its heartbeat in yellow."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for title in COLUMNS:
        table.add_column(title, justify="right" if title in ("BUSY", "PROCESSED", "FAILED") else "left",
                         style="bold" if title == "WORKER" else None, overflow="fold")
    for record in records:
        cells = [escape(c) for c in worker_row(record, now=now)]
        if record.failed:
            cells[5] = f"[red]{cells[5]}[/]"
        if now - record.sent_at > 1.5 * record.heartbeat_interval_s:
            cells[6] = f"[yellow]{cells[6]}[/]"
        table.add_row(*cells)
    return table
