"""The ``taskfleet`` command line: the composition root that may import the SDK, the worker and the operator.

Each command's flags and handler live in its module, named ``<command>_command`` (``worker_command``,
``beat_command``, ``call_command``...; the four broker commands share their flags in ``broker_commands``), which is
imported only when that command runs: every process of ``taskfleet worker`` (the supervisor and the children it
forks) would otherwise carry the operator, ``beat`` and the broker commands. ``COMMANDS`` names each command's
module and summary, so ``taskfleet --help`` lists them all without importing any; ``build_parser()`` (no argument)
imports them all, for ``docs/cli.md`` and the tests.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from taskfleet import __version__


@dataclass(frozen=True)
class Command:
    """A ``taskfleet`` subcommand: ``module`` registers its flags and handler with ``add_parser(subparsers, name,
    summary)``; ``summary`` is its line in ``taskfleet --help``."""

    name: str
    module: str
    summary: str


COMMANDS = (
    Command("worker", "taskfleet.worker.worker_command", "run a prefork worker"),
    Command("beat", "taskfleet.worker.beat_command", "send periodic tasks (safe to run several replicas)"),
    Command("call", "taskfleet.cli.broker_commands", "send a task by name (optionally wait for its result)"),
    Command("queues", "taskfleet.cli.broker_commands", "show ready / in-flight / delayed / dead / due counts"),
    Command("purge", "taskfleet.cli.broker_commands", "delete the ready and delayed messages of a queue"),
    Command("dead-letters", "taskfleet.cli.broker_commands",
            "list a queue's dead-lettered messages, or requeue them"),
    Command("workers", "taskfleet.cli.workers_command",
            "list the live workers: pod, queues, busy children, processed, failed, last heartbeat"),
    Command("inspect", "taskfleet.cli.inspect_command",
            "ask the workers what they run, hold, know (active, reserved, scheduled, registered, stats, ping...)"),
    Command("control", "taskfleet.cli.control_command",
            "change the workers at runtime: rate and time limits, consumers, pool size, shutdown"),
    Command("revoke", "taskfleet.cli.revoke_command",
            "revoke tasks (stored in the broker, so workers started later honour it too)"),
    Command("events", "taskfleet.cli.events_command",
            "watch the app's task and worker events live (tasks/s, failures, runtimes), or --json lines"),
    Command("check", "taskfleet.cli.check_command",
            "load an app and print its configuration, tasks, Celery settings found and problems"),
    Command("dashboard", "taskfleet.cli.dashboard_command",
            "serve the dashboard: pages and a JSON API over the task history, queues, workers and autoscaling"),
    Command("operator", "taskfleet.operator.operator_command", "run the Kubernetes operator (TaskQueue resources)"),
)


def build_parser(load: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``taskfleet`` parser with every command of ``COMMANDS``.

    Args:
        load: the commands whose flags and handlers are registered, which imports their modules; default all of
            them. The others are listed (``taskfleet --help``) but take no flags: ``main`` loads only the one it
            runs.
    """
    parser = argparse.ArgumentParser(prog="taskfleet", description="Kubernetes-native task queue for Python.")
    parser.add_argument("--version", action="version", version=f"taskfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if load is None or command.name in load:
            importlib.import_module(command.module).add_parser(sub, command.name, command.summary)
        else:
            sub.add_parser(command.name, help=command.summary)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Entry point of the ``taskfleet`` console script and ``python -m taskfleet``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(load=_command_named(arguments)).parse_args(arguments)
    code = args.handler(args, os.environ if environ is None else environ)
    sys.exit(int(code))


def _command_named(arguments: Sequence[str]) -> set[str]:
    """The command ``arguments`` run: the first that is not an option, as argparse reads it (``taskfleet`` itself
    takes no option with a value). Empty for ``--help``, ``--version`` or no command at all."""
    positional = [a for a in arguments if not a.startswith("-")]
    return set(positional[:1])
