"""``taskfleet call``: send a task by name, print its id, and with ``--wait`` its result (or why there is none).

stdout carries only what a script captures: the id on the first line, then the result as JSON (or, with
``--json``, one JSON object). The spinner, the remote traceback and error messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any

from rich.markup import escape

from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.cli import console
from taskfleet.cli.broker_commands import CallExit, app_from_args
from taskfleet.errors import ResultTimeout
from taskfleet.states import State


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet call`` (flags in ``broker_commands``); returns a ``CallExit``."""
    call_args, call_kwargs = parse_arguments(args.args, args.kwargs)
    app = app_from_args(args, environ)
    try:
        backend = app.backend if args.wait else None
        if args.wait and backend is None:
            raise console.CommandFailed("--wait needs a result backend: pass --result-backend URL, set "
                                        "TASKFLEET_RESULT_BACKEND or name an app that has one (-A)")
        try:
            task_id = app.send(args.task, call_args, call_kwargs, queue=args.queue, countdown=args.countdown,
                               priority=args.priority).id
        except ValueError as exc:  # a bad priority; ConfigurationError (a ValueError too) for a bad queue name
            raise console.CommandFailed(str(exc)) from exc
        if backend is None:
            if args.json:
                console.print_json(report(task_id, State.PENDING))
            else:
                console.plain(task_id)
            return CallExit.OK
        if not args.json:
            console.plain(task_id)  # first, so a script (or a person who gives up) has it before the wait
        return _wait(backend, task_id, args)
    finally:
        app.close()


def parse_arguments(args_json: str, kwargs_json: str) -> tuple[list[Any], dict[str, Any]]:
    """``--args`` and ``--kwargs`` as a list and a dict; anything else is a ``CommandFailed`` that says which."""
    try:
        call_args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise console.CommandFailed(f"--args is not JSON ({exc}): pass a list, e.g. --args '[1, \"a\"]'") from exc
    try:
        call_kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise console.CommandFailed(f"--kwargs is not JSON ({exc}): pass an object, e.g. --kwargs '{{\"n\": 1}}'"
                                    ) from exc
    if not isinstance(call_args, list):
        raise console.CommandFailed(f"--args must be a JSON list, got {type(call_args).__name__}: {args_json}")
    if not isinstance(call_kwargs, dict):
        raise console.CommandFailed(f"--kwargs must be a JSON object, got {type(call_kwargs).__name__}: "
                                    f"{kwargs_json}")
    return call_args, call_kwargs


def report(task_id: str, state: State | str, record: ResultRecord | None = None) -> dict[str, Any]:
    """The ``--json`` object: ``id``, ``state``, ``result`` (set on SUCCESS) and ``error`` (``type``, ``message``,
    ``traceback``; set on FAILURE and REVOKED). Always the same four keys."""
    error = None
    if record is not None and record.state in (State.FAILURE, State.REVOKED):
        error = {"type": exception_name(record), "message": record.exc_message or "",
                 "traceback": record.traceback}
    result = record.result if record is not None and record.state is State.SUCCESS else None
    return {"id": task_id, "state": str(state), "result": result, "error": error}


def exception_name(record: ResultRecord) -> str:
    """The failed task's exception type as a person writes it: ``ValueError``, ``billing.errors.Declined``."""
    if record.state is State.REVOKED and not record.exc_type:
        return "TaskRevoked"
    exc_type = record.exc_type or "Exception"
    return exc_type.removeprefix("builtins.")


def _wait(backend: ResultBackend, task_id: str, args: argparse.Namespace) -> int:
    who = f"[bold]{escape(args.task)}[/] [dim]{escape(f'[{task_id}]')}[/]"
    began = time.monotonic()
    try:
        with console.spinner(f"waiting for {who} …", enabled=not args.json):
            record = backend.wait(task_id, args.timeout)
    except ResultTimeout:
        return _timed_out(backend, task_id, args)
    if args.json:
        console.print_json(report(task_id, record.state, record))
        return CallExit.OK if record.state is State.SUCCESS else CallExit.FAILED
    if record.state is State.SUCCESS:
        _print_result(record.result)
        if console.err.is_terminal:
            console.err.print(f"[green]✓[/] {who} succeeded in {time.monotonic() - began:.2f}s")
        return CallExit.OK
    if record.state is State.REVOKED:
        return console.fail(f"task {args.task} [{task_id}] was revoked: {record.exc_message or 'no reason given'}")
    if record.traceback:
        console.print_remote_traceback(record.traceback)
    return console.fail(f"task {args.task} [{task_id}] failed: {exception_name(record)}: {record.exc_message or ''}")


def _print_result(value: Any) -> None:
    if console.out.is_terminal:
        console.out.print_json(json.dumps(value, default=repr))
    else:
        console.print_json(value)


def _timed_out(backend: ResultBackend, task_id: str, args: argparse.Namespace) -> int:
    record = backend.get(task_id)
    state: State | str = State.PENDING if record is None else record.state
    if args.json:
        console.print_json(report(task_id, state, record))
        return CallExit.TIMEOUT
    queue = f"queue {args.queue!r}" if args.queue else "its queue"
    hint = (f"no worker has reported starting it: is one consuming {queue}?" if state is State.PENDING
            else "it was sent and may still finish")
    return console.fail(f"timed out after {args.timeout:g}s waiting for {args.task} [{task_id}] (state "
                        f"{state}): {hint}", code=CallExit.TIMEOUT)
