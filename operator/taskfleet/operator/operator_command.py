"""``taskfleet operator``: run the Kubernetes operator (needs the ``operator`` extra: kopf and kubernetes)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from taskfleet.errors import ClusterError, ConfigurationError
from taskfleet.operator.readiness import DEFAULT_CHECK_INTERVAL_S, DEFAULT_STALE_AFTER_S
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
    p.add_argument("--metrics-port", type=int, default=9090,
                   help="serve Prometheus /metrics and the readiness endpoint /readyz here (0: off)")
    p.add_argument("--host", default="0.0.0.0", help="address of the liveness and metrics servers")
    p.add_argument("--api-check-interval", type=_seconds, default=DEFAULT_CHECK_INTERVAL_S, metavar="SECONDS",
                   help="seconds between readiness checks of the Kubernetes API")
    p.add_argument("--api-stale-after", type=_seconds, default=DEFAULT_STALE_AFTER_S, metavar="SECONDS",
                   help="/readyz fails once the Kubernetes API has not answered for this many seconds")
    p.add_argument("--peering", default=None, metavar="NAME",
                   help="run several replicas with kopf peering (default: standalone, one replica)")
    p.add_argument("--leader-elect", default=None, metavar="NAMESPACE/NAME",
                   help="run several replicas: the one holding this coordination.k8s.io Lease acts, the others wait")
    p.add_argument("--no-pod-deletion-cost", dest="pod_deletion_cost", action="store_false",
                   help="do not annotate worker pods before a scale-in (then it removes pods busy or not; "
                        "needs no RBAC on pods)")
    p.add_argument("--log-format", choices=["json", "console", "auto"], default="auto")
    p.add_argument("-l", "--log-level", default="info")
    p.set_defaults(handler=run)


def _seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


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
            peering=args.peering, leader_election_lease=args.leader_elect,
            api_check_interval_s=args.api_check_interval, api_stale_after_s=args.api_stale_after,
            pod_deletion_cost=args.pod_deletion_cost,
        )
    except ConfigurationError as exc:
        log.error("bad configuration", error=str(exc))
        return ExitCode.BAD_CONFIG
    log.info("operator starting", namespaces=list(options.namespaces) or "*", peering=options.peering or "standalone",
             leader_election=options.leader_election_lease)
    try:
        run_operator(options)
    except ClusterError as exc:
        log.error("operator stopped", error=str(exc))
        return ExitCode.FAILURE
    return ExitCode.OK
