"""Specification of what each process imports: every module a worker's supervisor holds when it forks is in each
of its children's memory too, so what ``taskfleet worker`` and ``import taskfleet`` load is a contract.

Each probe runs in a fresh interpreter and prints
``sys.modules`` at the moment that matters: for a worker, when its supervisor is about to fork (``Supervisor.run``
is replaced by the printout, so no child starts and no real broker is needed: ``memory://``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from taskfleet.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[2]

#: What no worker process needs: the operator and its Kubernetes clients, the broker commands' terminal output.
_NEVER_IN_A_WORKER = ("taskfleet.operator", "kopf", "kubernetes", "rich", "pygments", "taskfleet.cli.broker_commands",
                      "taskfleet.cli.console")

_PRINT_MODULES = "print('\\n'.join(sorted(sys.modules)))"

_WORKER_PROBE = """
import sys
from taskfleet.worker import supervisor, worker_command as worker_cli

def stop_before_forking(self):
    {print_modules}
    return 0

supervisor.Supervisor.run = stop_before_forking
if {no_health_port}:  # a container (this one, maybe) would get the default health port
    worker_cli.resolve_health_port = lambda args, environ: None
from taskfleet.cli import main
main({argv})
"""


def _run(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def _loaded(modules: set[str], *names: str) -> list[str]:
    """The modules of ``modules`` that are one of ``names`` or inside one of them."""
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names))


def _worker_modules(*, health_port: bool) -> set[str]:
    """What a ``taskfleet worker`` supervisor has imported when it forks its children."""
    argv = ["worker", "-A", "tests.tasks:app", "--broker", "memory://", "-c", "1", "--log-format", "json",
            "-l", "warning", *(("--health-host", "127.0.0.1", "--health-port", "0") if health_port else ())]
    return _run(_WORKER_PROBE.format(print_modules=_PRINT_MODULES, no_health_port=not health_port, argv=argv))


@pytest.mark.parametrize("health_port", [False, True], ids=["no health port", "health port"])
def test_a_worker_loads_neither_the_operator_nor_the_broker_commands(health_port: bool) -> None:
    modules = _worker_modules(health_port=health_port)

    assert _loaded(modules, *_NEVER_IN_A_WORKER) == []


def test_a_worker_without_beat_does_not_load_it() -> None:
    modules = _worker_modules(health_port=False)

    assert _loaded(modules, "taskfleet.worker.beat", "taskfleet.worker.beat_command") == []


def test_json_logs_load_neither_structlog_nor_rich() -> None:
    # structlog imports rich (and asyncio) whenever rich is installed, which it is, for the CLI
    modules = _worker_modules(health_port=True)

    assert _loaded(modules, "structlog", "rich") == []


def test_an_app_that_logs_with_structlog_still_writes_the_workers_json_lines() -> None:
    # Given JSON logging configured without structlog, when the app then imports structlog (the CLI routes it)
    code = ("from taskfleet.worker.logging import configure_logging, route_structlog\n"
            "configure_logging(fmt='json', level='info')\n"
            "import structlog\n"
            "route_structlog()\n"
            "structlog.get_logger('billing.tasks').info('charged', amount=3)\n"
            "structlog.get_logger().debug('below the level')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                            check=False)

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["event"], line["level"], line["logger"], line["amount"]) for line in lines] == [
        ("charged", "info", "billing.tasks", 3)]


def test_a_worker_without_a_health_port_loads_neither_prometheus_nor_an_http_server() -> None:
    modules = _worker_modules(health_port=False)

    assert _loaded(modules, "prometheus_client", "http.server", "wsgiref") == []


def test_beat_loads_neither_the_supervisor_nor_the_operator() -> None:
    modules = _run(f"import sys\nfrom taskfleet.cli import main\ntry:\n    main(['beat', '-A', 'tests.tasks:app', "
                   f"'--list', '--log-format', 'json'])\nexcept SystemExit:\n    {_PRINT_MODULES}")

    assert _loaded(modules, "taskfleet.worker.supervisor", "multiprocessing", *_NEVER_IN_A_WORKER) == []


def test_taskfleet_help_imports_no_command_module() -> None:
    modules = _run(f"import contextlib, io, sys\nfrom taskfleet.cli import main\n"
                   f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
                   f"    main(['--help'])\n{_PRINT_MODULES}")

    assert _loaded(modules, *{command.module for command in COMMANDS}) == []


def test_importing_the_sdk_loads_no_optional_dependency() -> None:
    modules = _run(f"import sys, taskfleet\n{_PRINT_MODULES}")

    assert _loaded(modules, "rich", "structlog", "prometheus_client", "redis", "pika", "kopf", "kubernetes",
                   "msgpack") == []


@pytest.mark.parametrize("name", [command.name for command in COMMANDS])
def test_the_parser_main_builds_for_one_command_lists_and_parses_like_the_full_one(name: str) -> None:
    full, lazy = build_parser(), build_parser(load={name})

    assert lazy.format_help() == full.format_help()
    assert _subcommand(lazy, name).format_help() == _subcommand(full, name).format_help()


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise AssertionError("no subcommands")
