"""``taskfleet dead-letters <queue>``: list a queue's dead letters (task, arguments, reason), or ``--requeue`` them.

Dead letters are shown by decoding their bytes with the SDK's ``Message``, never unpickling: a pickled message is
shown by its size only, like one that cannot be decoded at all.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from taskfleet.brokers.base import Broker, DeadLetter
from taskfleet.cli import console
from taskfleet.cli.broker_commands import app_from_args
from taskfleet.errors import ContentTypeRefused, DecodeError
from taskfleet.message import Message
from taskfleet.serializers import JSON, MSGPACK

#: Serializers the CLI decodes dead letters with: never pickle, which would run code from the broker.
SHOWN_CONTENT = frozenset({JSON, MSGPACK})
#: Characters of ``task(args...)`` shown in the table before it is cut with "…".
PREVIEW_CHARS = 60


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet dead-letters``."""
    app = app_from_args(args, environ)
    try:
        return _requeue(app.broker, args) if args.requeue else _list(app.broker, args)
    finally:
        app.close()


def _list(broker: Broker, args: argparse.Namespace) -> int:
    letters = select(broker.dead_letters(args.queue, limit=args.limit), args.ids)
    if args.json:
        console.print_json([letter_json(letter) for letter in letters])
    elif not letters:
        among = f" among the oldest {args.limit}" if args.ids else ""
        console.say(f"no dead letters{' with those ids' if args.ids else ''} in {escape(args.queue)}{among}")
    else:
        console.out.print(letters_table(letters, total=None if args.ids else broker.queue_depth(args.queue).dead))
    return 0


def _requeue(broker: Broker, args: argparse.Namespace) -> int:
    ids = sorted(set(args.ids)) if args.ids else None
    if ids is None and not broker.dead_letters(args.queue, limit=1):  # the list itself: counts may lag behind it
        return _requeued(args, 0, ids)
    if not args.yes:
        console.require_terminal(f"refusing to requeue dead letters of {args.queue!r} without asking")
        letters = select(broker.dead_letters(args.queue, limit=args.limit), ids)
        if letters:
            console.err.print(letters_table(letters, total=None if ids else broker.queue_depth(args.queue).dead))
        which = f"the dead letters with {console.plural(len(ids), 'id')} given" if ids else "all dead letters"
        if not console.ask(f"Requeue {which} of queue [bold]{escape(args.queue)}[/] to ready?"):
            return console.fail("aborted: nothing requeued")
    return _requeued(args, broker.requeue_dead_letters(args.queue, message_ids=ids), ids)


def _requeued(args: argparse.Namespace, moved: int, ids: Sequence[str] | None) -> int:
    if args.json:
        console.print_json({"queue": args.queue, "requeued": moved})
    else:
        console.say(f"requeued {console.plural(moved, 'message')} to {escape(args.queue)}")
    if ids is not None and moved < len(ids):
        console.err.print(f"[yellow]{len(ids) - moved} of the {console.plural(len(ids), 'id')} given "
                          f"{'was' if len(ids) - moved == 1 else 'were'} not in the dead-letter list[/]")
    return 0


def select(letters: Sequence[DeadLetter], ids: Sequence[str] | None) -> list[DeadLetter]:
    """``letters`` whose message id is in ``ids``; all of them when ``ids`` is None or empty."""
    return [letter for letter in letters if not ids or letter.message_id in ids]


def decode(data: bytes) -> Message | str:
    """The message in a dead letter's bytes, or why it cannot be shown: ``<undecodable: N bytes>``,
    ``<pickle: N bytes, not unpickled>``."""
    try:
        return Message.decode(data, accept=SHOWN_CONTENT)
    except ContentTypeRefused:
        content_type = data.partition(b"\n")[0].decode("ascii", "replace")
        return f"<{content_type}: {len(data)} bytes, not decoded>"
    except DecodeError:
        return f"<undecodable: {len(data)} bytes>"


def task_preview(data: bytes, width: int = PREVIEW_CHARS) -> str:
    """``task(arg, ..., key=value)`` with JSON-looking arguments, cut to ``width`` characters with "…"."""
    message = decode(data)
    if isinstance(message, str):
        return message
    arguments = [_json(arg) for arg in message.args] + [f"{key}={_json(value)}"
                                                        for key, value in message.kwargs.items()]
    text = f"{message.task}({', '.join(arguments)})"
    return text if len(text) <= width else text[:width - 2] + "…)"


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter of ``--json``: its id, Unix ``dead_at``, reason, size, and the decoded ``task``, ``task_id``,
    ``args``, ``kwargs`` (null when the bytes cannot be decoded; ``decode_error`` then says why)."""
    entry: dict[str, Any] = {
        "message_id": letter.message_id, "dead_at": letter.dead_at, "reason": letter.reason,
        "bytes": len(letter.data), "task": None, "task_id": None, "args": None, "kwargs": None, "decode_error": None,
    }
    message = decode(letter.data)
    if isinstance(message, str):
        entry["decode_error"] = message
    else:
        entry.update(task=message.task, task_id=message.id, args=list(message.args), kwargs=dict(message.kwargs))
    return entry


def letters_table(letters: Sequence[DeadLetter], *, total: int | None) -> Table:
    """The dead-letter table, oldest first. ``total``: how many the queue holds, for a note when more exist than
    are shown (None: don't say)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("DEAD AT", no_wrap=True)
    table.add_column("TASK", overflow="fold")
    table.add_column("REASON", style="red", overflow="fold")
    for letter in letters:
        table.add_row(escape(letter.message_id), local_time(letter.dead_at), escape(task_preview(letter.data)),
                      escape(letter.reason))
    if total is not None and total > len(letters):
        table.caption = f"the oldest {len(letters)} of {total} dead letters (--limit N shows more)"
    return table


def local_time(unix_s: float) -> str:
    """``2024-05-01 14:03:22 CEST``: a Unix time in this machine's zone."""
    return datetime.fromtimestamp(unix_s).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _json(value: Any) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False)
