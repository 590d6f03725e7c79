"""``taskfleet operator``: run the Kubernetes operator (needs the ``operator`` extra: kopf and kubernetes)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from taskfleet.errors import ConfigurationError
from taskfleet.worker.exitcodes import ExitCode
from taskfleet.worker.logging import configure_cli_logging, get_logger


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet operator`` (``name``) on the ``taskfleet`` parser."""
    p = subparsers.add_parser(name, help=summary, description=__doc__)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch TaskQueues in this namespace (repeatable; globs like 'team-*' work)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch TaskQueues in every namespace")
    p.add_argument("--liveness-port", type=int, default=8080, help="serve kopf's /healthz here (0: off)")
    p.add_argument("--metrics-port", type=int, default=9090, help="serve Prometheus /metrics here (0: off)")
    p.add_argument("--host", default="0.0.0.0", help="address of the liveness and metrics servers")
    p.add_argument("--peering", default=None, metavar="NAME",
                   help="run several replicas with kopf peering (default: standalone, one replica)")
    p.add_argument("--no-pod-deletion-cost", dest="pod_deletion_cost", action="store_false",
                   help="do not annotate worker pods before a scale-in (then it removes pods busy or not; "
                        "needs no RBAC on pods)")
    p.add_argument("--log-format", choices=["json", "console", "auto"], default="auto")
    p.add_argument("-l", "--log-level", default="info")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``taskfleet operator``; returns an exit code."""
    if not configure_cli_logging("operator", fmt=args.log_format, level=args.log_level):
        return ExitCode.BAD_CONFIG
    log = get_logger("taskfleet.operator")
    try:
        from taskfleet.operator.runner import OperatorSettings
        from taskfleet.operator.runner import run as run_operator
    except ImportError as exc:
        log.error("the operator needs its extra: pip install 'taskfleet[operator]'", error=str(exc))
        return ExitCode.BAD_CONFIG
    try:
        options = OperatorSettings(
            namespaces=tuple(args.namespace), all_namespaces=args.all_namespaces,
            liveness_port=args.liveness_port or None, metrics_port=args.metrics_port or None, host=args.host,
            peering=args.peering, pod_deletion_cost=args.pod_deletion_cost,
        )
    except ConfigurationError as exc:
        log.error("bad configuration", error=str(exc))
        return ExitCode.BAD_CONFIG
    log.info("operator starting", namespaces=list(options.namespaces) or "*", peering=options.peering or "standalone")
    run_operator(options)
    return ExitCode.OK
