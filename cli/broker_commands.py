"""``taskfleet call | queues | purge``: talk to a broker by URL, without importing any task code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from taskfleet.app import App
from taskfleet.errors import ConfigurationError, TaskfleetError
from taskfleet.settings import settings_from_env


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    call = sub.add_parser("call", help="send a task by name (optionally wait for its result)")
    call.add_argument("task", help="task name, e.g. billing.send")
    call.add_argument("--args", default="[]", help="JSON list of positional arguments")
    call.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    call.add_argument("-Q", "--queue", default="default")
    call.add_argument("--countdown", type=float, default=None)
    call.add_argument("--priority", type=int, default=0)
    call.add_argument("--wait", action="store_true", help="wait for the result and print it")
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait with --wait")
    _connection_flags(call)
    call.set_defaults(handler=_call)

    queues = sub.add_parser("queues", help="show ready / in-flight / delayed / dead counts per queue")
    queues.add_argument("--json", action="store_true", help="machine-readable output")
    _connection_flags(queues)
    queues.set_defaults(handler=_queues)

    purge = sub.add_parser("purge", help="delete the ready and delayed messages of a queue")
    purge.add_argument("queue")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _connection_flags(purge)
    purge.set_defaults(handler=_purge)


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default=None, help="broker URL (default: TASKFLEET_BROKER_URL)")
    p.add_argument("--broker-management-url", default=None, metavar="URL",
                   help="RabbitMQ management API URL (default: TASKFLEET_BROKER_MANAGEMENT_URL)")
    p.add_argument("--result-backend", default=None, help="result backend URL (default: TASKFLEET_RESULT_BACKEND)")


def _app(args: argparse.Namespace, environ: Mapping[str, str]) -> App:
    config: dict[str, Any] = settings_from_env(environ)
    if args.broker:
        config["broker"] = args.broker
    if args.broker_management_url:
        config["broker_management_url"] = args.broker_management_url
    if getattr(args, "result_backend", None):
        config["result_backend"] = args.result_backend
    return App("taskfleet-cli", **config)


def _fail(message: str) -> int:
    print(f"taskfleet: {message}", file=sys.stderr)
    return 1


def _call(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    try:
        call_args, call_kwargs = json.loads(args.args), json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        return _fail(f"--args/--kwargs must be JSON: {exc}")
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        return _fail("--args must be a JSON list and --kwargs a JSON object")
    try:
        app = _app(args, environ)
        result = app.send(args.task, call_args, call_kwargs, queue=args.queue, countdown=args.countdown,
                          priority=args.priority)
        print(result.id)
        if args.wait:
            print(json.dumps(result.get(timeout=args.timeout, propagate=True)))
    except (TaskfleetError, ConfigurationError) as exc:
        return _fail(str(exc))
    return 0


def _queues(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    try:
        broker = _app(args, environ).broker
        rows = {q: broker.queue_depth(q) for q in broker.queues()}
    except TaskfleetError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps({q: {"ready": d.ready, "in_flight": d.in_flight, "delayed": d.delayed, "dead": d.dead}
                          for q, d in rows.items()}))
        return 0
    print(f"{'QUEUE':<30} {'READY':>8} {'IN-FLIGHT':>10} {'DELAYED':>8} {'DEAD':>6}")
    for q, d in rows.items():
        print(f"{q:<30} {d.ready:>8} {d.in_flight:>10} {d.delayed:>8} {d.dead:>6}")
    return 0


def _purge(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if not args.yes:
        answer = input(f"Delete all ready and delayed messages of queue {args.queue!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("aborted")
            return 1
    try:
        count = _app(args, environ).broker.purge(args.queue)
    except TaskfleetError as exc:
        return _fail(str(exc))
    print(f"purged {count} messages from {args.queue}")
    return 0
