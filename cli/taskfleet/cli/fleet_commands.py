"""What ``taskfleet workers | inspect | control | revoke`` share: their flags, the ``App`` whose fleet they steer, and
how the workers' replies are judged and shown.

The fleet of an app lives in its broker under the app's name (``FleetStore.namespace``), so these commands need the
name as well as the broker: ``-A module:app`` gives both (and the app's settings), or ``--broker URL --app-name
NAME`` when there is no app module at hand. No task code is imported, and no URL is ever printed with its password.

The functions from replies to lines and JSON are pure, so the unit tests read them as the specification of the
output; the handlers (``<command>_command``) only connect, ask and print.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskfleet.app import App
from taskfleet.fleet.protocol import DEFAULT_TIMEOUT_S, ControlReply
from taskfleet.settings import settings_from_env
from taskfleet.urls import mask_url

EXIT_OK = 0
#: A worker refused the command, a worker asked for by ``--worker`` did not answer, or none answered at all.
EXIT_FAILED = 1

_APP_HELP = ("module:attribute of your App (as for the worker): its name is the fleet's namespace, its settings give "
             "the broker")
_APP_NAME_HELP = ("the app's name (App(\"NAME\")), when there is no app module to pass with -A: the workers of an app "
                  "meet under its name in the broker")


def add_connection_flags(p: argparse.ArgumentParser) -> None:
    """``-A``/``--app`` or ``--app-name``, and ``--broker``."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("-A", "--app", default=None, help=_APP_HELP)
    which.add_argument("--app-name", default=None, metavar="NAME", help=_APP_NAME_HELP)
    p.add_argument("--broker", default=None, help="broker URL (default: the app's, else TASKFLEET_BROKER_URL)")


def add_target_flags(p: argparse.ArgumentParser) -> None:
    """``--worker`` (Celery's ``-d``/``--destination``) and ``--timeout``."""
    p.add_argument("--worker", "-d", "--destination", action=_WorkerIds, default=None, dest="workers",
                   metavar="WORKER", help="only this worker id (as `taskfleet workers` shows it), or several "
                                          "separated by commas as Celery's -d takes them; default: every worker "
                                          "(repeatable)")
    p.add_argument("--timeout", type=positive_seconds, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds to wait for the workers' replies")


class _WorkerIds(argparse._AppendAction):
    """``--worker a --worker b`` and Celery's ``-d a,b`` both give ``["a", "b"]``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        found = list(getattr(namespace, self.dest, None) or [])
        found += [w.strip() for w in str(values).split(",") if w.strip()]
        setattr(namespace, self.dest, found)


def fleet_app(args: argparse.Namespace, environ: Mapping[str, str]) -> App:
    """The app whose fleet the command steers: the one ``-A`` names (with ``--broker`` and the environment's broker
    over its own), else ``App(--app-name)`` on ``--broker`` or ``TASKFLEET_BROKER_URL``. ``AppImportError`` when
    ``-A`` cannot be loaded; ``ConfigurationError`` (a ``TaskfleetError``) when neither -A nor --app-name is given."""
    from taskfleet.errors import ConfigurationError

    config: dict[str, Any] = {k: v for k, v in settings_from_env(environ).items() if k == "broker"}
    if args.broker:
        config["broker"] = args.broker
    if args.app:
        from taskfleet.worker.loader import load_app

        app = load_app(args.app)
        if config:
            app.configure(**config)
        return app
    if not args.app_name:
        raise ConfigurationError("name the app whose workers to reach: -A module:app, or --app-name NAME with "
                                 "--broker URL (the workers of an app meet under its name in the broker)")
    return App(args.app_name, **config)


def where(app: App) -> str:
    """``app 'billing' on redis://:***@host:6379/0``: what a person checks when no worker answers."""
    broker = app.settings.broker_url
    return f"app {app.name!r} on {mask_url(broker) if broker else 'no broker'}"


def seconds(value: float) -> str:
    """``1.0s``, ``2.5s``, ``0.25s``: a timeout as the messages write it (one decimal at least)."""
    return f"{value:.1f}s" if round(value, 1) == value else f"{value:g}s"


def ago(age_s: float) -> str:
    """How long ago a heartbeat was sent: ``1.2s ago``, ``2m05s ago``, ``3h02m ago`` (a clock ahead of ours
    counts as ``0.0s ago``)."""
    age_s = max(age_s, 0.0)
    if age_s < 60:
        return f"{age_s:.1f}s ago"
    if age_s < 3600:
        minutes, secs = divmod(int(age_s), 60)
        return f"{minutes}m{secs:02d}s ago"
    hours, minutes = divmod(int(age_s) // 60, 60)
    return f"{hours}h{minutes:02d}m ago"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the replies to one request come to: who answered (in worker order), who was asked for by name and did
    not answer, and the exit status."""

    replies: tuple[ControlReply, ...]
    missing: tuple[str, ...]

    @property
    def refused(self) -> tuple[ControlReply, ...]:
        return tuple(r for r in self.replies if not r.ok)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if not self.replies or self.missing or self.refused else EXIT_OK


def outcome(replies: Sequence[ControlReply], destination: Sequence[str] | None) -> Outcome:
    """Judge ``replies`` to a request sent to ``destination`` (None: every worker). A worker that answered twice
    counts once (its first answer)."""
    first: dict[str, ControlReply] = {}
    for reply in replies:
        first.setdefault(reply.worker, reply)
    missing = tuple(w for w in dict.fromkeys(destination or ()) if w not in first)
    return Outcome(replies=tuple(first[w] for w in sorted(first)), missing=missing)


def no_answer(timeout_s: float, app: App) -> str:
    """The message of a request nobody answered."""
    return (f"no worker answered within {seconds(timeout_s)} ({where(app)}; `taskfleet workers` lists the live "
            "ones)")


def missing_line(worker: str, timeout_s: float) -> str:
    return f"{worker}: no answer within {seconds(timeout_s)}"


def summary(result: Any) -> str:
    """A control command's result on one line: Celery's ``{"ok": "message"}`` as the message (other keys that say
    something in brackets after it), a string as it is, anything else as compact JSON."""
    import json

    if isinstance(result, Mapping) and isinstance(result.get("ok"), str):
        rest = {k: v for k, v in result.items() if k != "ok" and v not in (None, [], {}, "")}
        said = "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else summary(v)}"
                         for k, v in rest.items())
        return str(result["ok"]) + (f" ({said})" if said else "")
    if isinstance(result, str):
        return result
    if result is None:
        return ""
    return json.dumps(result, separators=(", ", ": "), default=str, sort_keys=True)


def reply_line(reply: ControlReply) -> tuple[str, str, str]:
    """The cells of one worker's reply to a control command: worker, ``ok`` or ``error``, and what it said."""
    if reply.ok:
        return (reply.worker, "ok", summary(reply.result))
    return (reply.worker, "error", reply.error or "refused (no reason given)")


def replies_json(found: Outcome) -> dict[str, Any]:
    """``--json`` of ``control`` and ``revoke``: ``{worker: {"ok", "result", "error"}}``, a worker asked for by
    name that did not answer with ``{"ok": false, "result": null, "error": "no answer"}``."""
    answers: dict[str, Any] = {r.worker: {"ok": r.ok, "result": r.result, "error": r.error} for r in found.replies}
    for worker in found.missing:
        answers[worker] = {"ok": False, "result": None, "error": "no answer"}
    return answers


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
