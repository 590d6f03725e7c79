"""``taskfleet dashboard``: the fleet's monitor in a browser, with a JSON API (docs/dashboard.md).

It keeps a durable history of the app's tasks (a SQLite file, ``--history``, trimmed to ``--retention``) filled
from the events stream by an ingester thread, and serves pages and the API. Without auth it serves only on a
loopback address; secrets come from the environment, never only from argv:

- ``TASKFLEET_DASHBOARD_ADMIN_TOKEN`` / ``TASKFLEET_DASHBOARD_READ_TOKEN``: bearer tokens of the admin and the
  read-only role (also accepted by the ``/login`` form, which keeps them in a cookie);
- ``TASKFLEET_DASHBOARD_USERS``: basic-auth users, ``name:role:password`` separated by newlines or commas (or
  ``--users-file``, one a line); role is ``admin`` or ``read-only``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskfleet.cli import console
from taskfleet.cli.console import CommandFailed
from taskfleet.cli.fleet_commands import add_connection_flags, fleet_app

ENV_ADMIN_TOKEN = "TASKFLEET_DASHBOARD_ADMIN_TOKEN"
ENV_READ_TOKEN = "TASKFLEET_DASHBOARD_READ_TOKEN"
ENV_USERS = "TASKFLEET_DASHBOARD_USERS"
#: History kept by default: 7 days, in seconds.
DEFAULT_RETENTION_S = 7 * 86400.0
_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str) -> None:
    """Register ``taskfleet dashboard`` on the ``taskfleet`` parser."""
    from taskfleet.dashboard.settings import DEFAULT_HOST, DEFAULT_PORT

    p = subparsers.add_parser(name, help=summary, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_flags(p)
    p.add_argument("--result-backend", default=None, help="result backend URL (default: the app's)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (without auth, only a loopback address is allowed)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0: any free one)")
    p.add_argument("--url-prefix", default="", metavar="PATH",
                   help="serve under this path behind a reverse proxy, e.g. /taskfleet")
    p.add_argument("--trust-proxy-headers", action="store_true",
                   help="honour X-Forwarded-Prefix/-Proto/-Host (only behind a proxy that sets them)")
    p.add_argument("--history", default=None, metavar="PATH",
                   help="the history's SQLite file (default: $XDG_DATA_HOME/taskfleet/dashboard-<app>.sqlite3)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--retention", type=duration_s, default=None, metavar="DURATION",
                      help="how long tasks stay in the history: seconds, or 90m, 12h, 7d, 2w (default 7d)")
    keep.add_argument("--retention-days", type=float, default=None, metavar="DAYS",
                      help="the same in days (as the Helm chart passes it)")
    p.add_argument("--users-file", default=None, metavar="PATH",
                   help=f"basic-auth users, one 'name:role:password' a line (or {ENV_USERS})")
    p.add_argument("--proxy-user-header", default=None, metavar="HEADER",
                   help="trust this header as the user name set by an authenticating proxy (X-Forwarded-User)")
    p.add_argument("--proxy-groups-header", default=None, metavar="HEADER",
                   help="the proxy's header with the user's groups (comma separated)")
    p.add_argument("--proxy-admin-group", action="append", default=None, metavar="GROUP",
                   help="a group whose members are admin (repeatable; default: admin)")
    p.add_argument("--kube", "--kube-all-namespaces", action="store_true", dest="kube",
                   help="show the TaskQueues' autoscaling (reads TaskQueues and Events from the Kubernetes API, "
                        "in every namespace unless --namespace)")
    p.add_argument("--namespace", "--kube-namespace", action="append", default=None, dest="namespaces",
                   metavar="NAMESPACE", help="read the TaskQueues of this namespace only (repeatable; implies --kube)")
    p.add_argument("--kubeconfig", default=None, metavar="PATH",
                   help="with --kube outside a cluster: the kubeconfig (default: in-cluster, else ~/.kube/config)")
    p.set_defaults(handler=run)


def duration_s(text: str) -> float:
    """``3600``, ``90m``, ``12h``, ``7d``, ``2w`` in seconds (> 0)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90m, 12h, 7d)")
    value = float(found[1]) * _UNITS_S.get(found[2] or "s", 1.0)
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration is > 0")
    return value


def parse_users(text: str) -> list[tuple[str, str, str]]:
    """``name:role:password`` entries, separated by newlines or commas (blank lines and ``#`` comments skipped):
    ``(name, role, password)``; the password is last, so it may hold ``:``."""
    users = []
    for entry in re.split(r"[\n,]", text):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        name, _, rest = entry.partition(":")
        role, _, password = rest.partition(":")
        if not name or not role or not password:
            raise CommandFailed("a basic-auth user is 'name:role:password' (role: admin or read-only)")
        users.append((name, role, password))
    return users


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """The ``DashboardSettings`` of the flags and the environment's secrets; ``CommandFailed`` when they are not
    valid."""
    from taskfleet.dashboard.settings import AuthSettings, BasicUser, DashboardSettings

    text = environ.get(ENV_USERS, "")
    if args.users_file:
        try:
            text += "\n" + Path(args.users_file).read_text()
        except OSError as exc:
            raise CommandFailed(f"cannot read --users-file: {exc.strerror}") from exc
    try:
        auth = AuthSettings(
            admin_token=environ.get(ENV_ADMIN_TOKEN) or None, read_token=environ.get(ENV_READ_TOKEN) or None,
            basic_users=tuple(BasicUser(name=n, role=r, password=p) for n, r, p in parse_users(text)),
            proxy_user_header=args.proxy_user_header, proxy_groups_header=args.proxy_groups_header,
            proxy_admin_groups=tuple(args.proxy_admin_group or ("admin",)))
        settings = DashboardSettings(host=args.host, port=args.port, url_prefix=args.url_prefix.rstrip("/"),
                                     trust_forwarded_headers=args.trust_proxy_headers, auth=auth)
        settings.check_exposure()
    except ValueError as exc:
        raise CommandFailed(str(exc)) from exc
    return settings


def history_path(args: argparse.Namespace, environ: Mapping[str, str], app_name: str) -> Path:
    """``--history``, else ``dashboard-<app>.sqlite3`` in ``$XDG_DATA_HOME/taskfleet`` (``~/.local/share``)."""
    if args.history:
        return Path(args.history)
    data = environ.get("XDG_DATA_HOME") or os.path.join(environ.get("HOME", "."), ".local", "share")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", app_name)
    return Path(data) / "taskfleet" / f"dashboard-{safe}.sqlite3"


def retention_s(args: argparse.Namespace) -> float:
    """``--retention`` or ``--retention-days`` in seconds (default 7 days)."""
    if args.retention_days is not None:
        if args.retention_days <= 0:
            raise CommandFailed("--retention-days is > 0")
        return float(args.retention_days) * 86400.0
    return float(args.retention) if args.retention is not None else DEFAULT_RETENTION_S


@console.command
def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Handle ``taskfleet dashboard``: serve until SIGINT/SIGTERM (0), or refuse a bad setup (1)."""
    from taskfleet import brokers
    from taskfleet.dashboard.history.ingester import Ingester
    from taskfleet.dashboard.history.settings import HistorySettings
    from taskfleet.dashboard.history.store import HistoryStore
    from taskfleet.dashboard.web.app import create_app
    from taskfleet.dashboard.web.server import serve

    settings = settings_from_args(args, environ)
    app = fleet_app(args, environ)
    if args.result_backend:
        app.configure(result_backend=args.result_backend)
    path = history_path(args, environ, app.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    kube = _kube(args) if args.kube or args.namespaces else None
    history_settings = HistorySettings(path=str(path), retention_s=retention_s(args))
    history = HistoryStore(history_settings)
    # The ingester's broker is its own: a connection is never shared between threads.
    ingest_broker = brokers.connect(app.settings.broker_settings())
    ingester = Ingester(app, ingest_broker, history, history_settings, kube=kube)
    ingester.start()
    try:
        serve(create_app(app=app, history=history, kube=kube, settings=settings), settings=settings)
    finally:
        ingester.stop()
        ingest_broker.close()
        history.close()
        if kube is not None:
            kube.close()
        app.close()
    return 0


def _kube(args: argparse.Namespace) -> Any:
    """The Kubernetes reader (``taskfleet.dashboard.kube``), in the cluster or from the kubeconfig."""
    try:
        from taskfleet.dashboard.kube import KubeReader  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise CommandFailed(f"--kube needs the kubernetes extra: {exc}") from exc
    return KubeReader.connect(namespaces=args.namespaces, kubeconfig=args.kubeconfig)
