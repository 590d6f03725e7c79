"""The ``taskfleet`` command line: the composition root that may import the SDK, the worker and the operator."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from taskfleet import __version__
from taskfleet.cli import broker_commands
from taskfleet.operator import cli as operator_cli
from taskfleet.worker import beat_cli
from taskfleet.worker import cli as worker_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskfleet", description="Kubernetes-native task queue for Python.")
    parser.add_argument("--version", action="version", version=f"taskfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker_cli.add_parser(sub)
    beat_cli.add_parser(sub)
    broker_commands.add_parsers(sub)
    operator_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Entry point of the ``taskfleet`` console script and ``python -m taskfleet``."""
    args = build_parser().parse_args(argv)
    code = args.handler(args, os.environ if environ is None else environ)
    sys.exit(int(code))
