"""``taskfleet call | queues | purge | dead-letters``: the flags of the commands that talk to a broker by URL, and
the ``App`` they connect with. No task code is imported.

The handlers live in ``call_command``, ``queues_command``, ``purge_command`` and ``dead_letters_command`` (one
module per command, named after it) and are imported only when one of these commands runs: they use ``rich``,
which ``taskfleet worker`` (same console script) must not load.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any

from taskfleet.app import App
from taskfleet.settings import settings_from_env

#: Seconds ``call --wait`` waits for the result before giving up (the task still runs).
DEFAULT_WAIT_TIMEOUT_S = 30.0
#: Dead letters ``dead-letters`` lists, oldest first: a screenful, with a note saying how many more there are.
DEFAULT_DEAD_LETTER_LIMIT = 50


class CallExit(IntEnum):
    """Exit status of ``taskfleet call``, so a script can tell a failed task from one still running."""

    OK = 0  # sent (and, with --wait, succeeded)
    FAILED = 1  # the task failed or was revoked, or the command could not run (bad flags, broker unreachable)
    TIMEOUT = 124  # --wait ran out of time; the task was sent and may still run (124, like timeout(1))


_CALL_DESCRIPTION = (
    "Prints the task's id; with --wait, then waits for the task and prints its result as JSON (or its error on "
    f"stderr). Exit status: {CallExit.OK} sent (with --wait: succeeded); {CallExit.FAILED} the task failed or was "
    f"revoked, or the command could not run; {CallExit.TIMEOUT} --wait timed out (the task may still run)."
)
_CONFIRM_RULE = "It asks on the terminal first (--yes skips the question); without a terminal it refuses unless --yes."
_QUEUES_DESCRIPTION = ("One row per queue the broker has seen; '?' where the broker cannot count (RabbitMQ: in-flight "
                       "without the management API, delayed never). DELAYED: not due yet; DUE: delayed messages "
                       "whose time has come, waiting for a worker's fetch to make them ready (Redis; on SQLite and "
                       "RabbitMQ they are ready at once): work to do, like READY.")
_PURGE_DESCRIPTION = f"In-flight messages are left to their workers, and dead letters are kept. {_CONFIRM_RULE}"
_DEAD_LETTERS_DESCRIPTION = ("Lists the messages a queue dead-lettered, oldest first, with the task, its arguments and "
                             f"the reason. With --requeue, moves them back to ready. {_CONFIRM_RULE}")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``name`` (``call``, ``queues``, ``purge`` or ``dead-letters``) on the ``taskfleet`` parser."""
    add_flags, description = _COMMANDS[name]
    add_flags(subparsers.add_parser(name, help=summary, description=description))


def _call_flags(call: argparse.ArgumentParser) -> None:
    call.add_argument("task", help="task name, e.g. billing.send")
    call.add_argument("--args", default="[]", help="JSON list of positional arguments")
    call.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    call.add_argument("-Q", "--queue", default=None,
                      help="queue to send to (default: the app's route for the task, else its default queue)")
    call.add_argument("--countdown", type=_non_negative, default=None, metavar="S",
                      help="run no earlier than S seconds from now")
    call.add_argument("--priority", type=int, default=None,
                      help="0-9, 9 runs first (default: the route's, the task's when registered, else 0)")
    call.add_argument("--wait", action="store_true",
                      help="wait for the result and print it (a spinner on stderr when it is a terminal)")
    call.add_argument("--timeout", type=_positive, default=DEFAULT_WAIT_TIMEOUT_S, metavar="S",
                      help=f"seconds to wait with --wait before exiting {CallExit.TIMEOUT}")
    call.add_argument("--json", action="store_true",
                      help='print one JSON object {"id", "state", "result", "error"} and nothing else')
    _connection_flags(call)
    call.add_argument("--result-backend", default=None, help="result backend URL (default: TASKFLEET_RESULT_BACKEND)")
    call.set_defaults(handler=_call)


def _queues_flags(queues: argparse.ArgumentParser) -> None:
    queues.add_argument("--json", action="store_true", help="machine-readable output")
    _connection_flags(queues)
    queues.set_defaults(handler=_queues)


def _purge_flags(purge: argparse.ArgumentParser) -> None:
    purge.add_argument("queue", help="queue name")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _connection_flags(purge)
    purge.set_defaults(handler=_purge)


def _dead_letters_flags(dead: argparse.ArgumentParser) -> None:
    dead.add_argument("queue", help="queue name")
    dead.add_argument("--requeue", action="store_true",
                      help="move the dead letters (all, or those given with --id) back to the queue")
    dead.add_argument("--id", action="append", default=None, dest="ids", metavar="ID",
                      help="only the dead letter with this message id (repeatable; a listing looks among the "
                           "oldest --limit)")
    dead.add_argument("--limit", type=positive_int, default=DEFAULT_DEAD_LETTER_LIMIT, metavar="N",
                      help="list at most N dead letters")
    dead.add_argument("--json", action="store_true",
                      help='machine-readable output: a list of dead letters, or {"queue", "requeued"} with --requeue')
    dead.add_argument("--yes", action="store_true", help="with --requeue: do not ask for confirmation")
    _connection_flags(dead)
    dead.set_defaults(handler=_dead_letters)


#: Each command's flags and ``--help`` description (its summary is in ``taskfleet.cli.COMMANDS``).
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {
    "call": (_call_flags, _CALL_DESCRIPTION),
    "queues": (_queues_flags, _QUEUES_DESCRIPTION),
    "purge": (_purge_flags, _PURGE_DESCRIPTION),
    "dead-letters": (_dead_letters_flags, _DEAD_LETTERS_DESCRIPTION),
}


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-A", "--app", default=None,
                   help="module:attribute of your App (as for the worker): use its settings and routes")
    p.add_argument("--broker", default=None, help="broker URL (default: TASKFLEET_BROKER_URL)")
    p.add_argument("--broker-management-url", default=None, metavar="URL",
                   help="RabbitMQ management API URL (default: TASKFLEET_BROKER_MANAGEMENT_URL)")


def app_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> App:
    """The CLI's ``App``: the one ``-A`` names (its settings, routes and serializer), else a blank one; either way
    with the environment's connection settings, overridden by the connection flags. Raises ``AppImportError`` (a
    ``TaskfleetError``) when ``-A`` cannot be loaded."""
    config: dict[str, Any] = settings_from_env(environ)
    if args.broker:
        config["broker"] = args.broker
    if args.broker_management_url:
        config["broker_management_url"] = args.broker_management_url
    if getattr(args, "result_backend", None):
        config["result_backend"] = args.result_backend
    if not args.app:
        return App("taskfleet-cli", **config)
    from taskfleet.worker.loader import load_app

    app = load_app(args.app)
    if config:
        app.configure(**config)
    return app


# The handlers are imported when their command runs (see the module docstring).

def _call(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from taskfleet.cli import call_command

    return call_command.run(args, environ)


def _queues(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from taskfleet.cli import queues_command

    return queues_command.run(args, environ)


def _purge(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from taskfleet.cli import purge_command

    return purge_command.run(args, environ)


def _dead_letters(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from taskfleet.cli import dead_letters_command

    return dead_letters_command.run(args, environ)


def _positive(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value
