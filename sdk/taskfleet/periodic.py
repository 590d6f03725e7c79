"""``PeriodicEntry``: one named line of the beat schedule (what to send, when, and what to do about missed ticks),
and the declarative form of a schedule in configuration.

Catch-up policies, applied when beat finds ticks that passed without being sent (every replica was down, or a
takeover took a lease period):

- ``"last"`` (default): send only the most recent missed tick, skip the older ones.
- ``"all"``: send every missed tick, oldest first (at most ``MAX_CATCH_UP`` per entry; older ones are skipped).
- ``"none"``: skip every tick more than ``DEFAULT_GRACE_S`` late; only ticks still on time are sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from taskfleet.errors import ConfigurationError
from taskfleet.schedules import Schedule, to_schedule
from taskfleet.signature import Signature

__all__ = ["DEFAULT_CATCH_UP", "DEFAULT_GRACE_S", "MAX_CATCH_UP", "CatchUp", "PeriodicEntry", "entries_from_config"]

CatchUp = Literal["last", "all", "none"]
DEFAULT_CATCH_UP: CatchUp = "last"
#: A tick sent within this many seconds of its time counts as on time, not missed (a leading beat wakes at each tick
#: and sends it within milliseconds; a takeover or restart comes later than this).
DEFAULT_GRACE_S = 0.5
#: Most missed ticks ``catch_up="all"`` sends for one entry at once (a 1-second entry down for a day would be 86400).
MAX_CATCH_UP = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}")
_CONFIG_KEYS = frozenset({"name", "task", "schedule", "args", "kwargs", "queue", "options"})
_OPTION_KEYS = frozenset({"priority", "expires", "catch_up"})


@dataclass(frozen=True, kw_only=True, slots=True)
class PeriodicEntry:
    """``name`` (unique in the app: the key of its state in the broker), the ``signature`` sent each tick, its
    ``schedule`` and its ``catch_up`` policy."""

    name: str
    signature: Signature
    schedule: Schedule
    catch_up: CatchUp = DEFAULT_CATCH_UP

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigurationError(f"invalid periodic task name {self.name!r}: 1-200 letters, digits, '._:@/-'")
        if self.catch_up not in get_args(CatchUp):
            raise ConfigurationError(f"catch_up must be one of {get_args(CatchUp)}, got {self.catch_up!r}")
        sig = self.signature
        if sig.callbacks or sig.errbacks or sig.countdown is not None or sig.eta is not None or sig.task_id:
            raise ConfigurationError(f"periodic task {self.name!r}: beat sends each tick as one plain call; "
                                     "link, link_error, countdown, eta and task_id are not supported here")


def entries_from_config(config: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]
                        ) -> list[PeriodicEntry]:
    """Entries from a declarative schedule, e.g. loaded from YAML::

        [{"name": "every-30s", "task": "billing.heartbeat", "schedule": 30},
         {"name": "daily-report", "task": "billing.report", "schedule": "0 10,17 * * *",
          "args": [1], "kwargs": {}, "queue": "reports", "options": {"priority": 5, "catch_up": "all"}}]

    ``schedule`` is seconds, a cron string, a ``timedelta`` or a ``crontab``; ``options`` takes ``priority``,
    ``expires`` (seconds, as in ``apply_async(expires=)``) and ``catch_up``. Unknown keys raise
    ``ConfigurationError``.

    Celery's ``beat_schedule`` is accepted as it is: a mapping of entry name -> entry, whose ``options`` may also
    hold ``queue``."""
    entries: list[PeriodicEntry] = []
    for raw in _entry_list(config):
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"a schedule entry is a mapping, got {raw!r}")
        unknown = set(raw) - _CONFIG_KEYS
        if unknown or not {"name", "task", "schedule"} <= set(raw):
            raise ConfigurationError(f"schedule entry {raw.get('name')!r}: needs name, task and schedule; "
                                     f"unknown keys {sorted(unknown)} (allowed: {sorted(_CONFIG_KEYS)})")
        options = dict(raw.get("options") or {})
        if set(options) - _OPTION_KEYS:
            raise ConfigurationError(f"schedule entry {raw['name']!r}: unknown options "
                                     f"{sorted(set(options) - _OPTION_KEYS)} (allowed: {sorted(_OPTION_KEYS)})")
        signature = Signature(task=raw["task"], args=tuple(raw.get("args") or ()), kwargs=dict(raw.get("kwargs") or {}),
                              queue=raw.get("queue"), priority=options.get("priority"),
                              expires=options.get("expires"))
        entries.append(PeriodicEntry(name=raw["name"], signature=signature, schedule=to_schedule(raw["schedule"]),
                                     catch_up=options.get("catch_up", DEFAULT_CATCH_UP)))
    return entries


def _entry_list(config: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The entries of either form, as a list of mappings with a ``name``."""
    if not isinstance(config, Mapping):
        return list(config)
    entries: list[Mapping[str, Any]] = []
    for name, raw in config.items():
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"schedule entry {name!r} is a mapping, got {raw!r}")
        entry = {"name": name, **raw}
        options = dict(raw.get("options") or {})
        if "queue" in options:
            entry["queue"] = options.pop("queue")
            entry["options"] = options
        entries.append(entry)
    return entries
