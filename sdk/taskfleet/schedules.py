"""When periodic tasks fire: ``crontab`` (cron fields in the app's time zone) and ``Every`` (a fixed interval), and
the one pure function that answers "when is the next fire after this instant": ``next_run(spec, after)``.

Cron maths is cronsim's (a small, well-kept cron evaluator that mirrors cronie). Its daylight-saving rules are ours:

- A wall-clock time that does not exist on a spring-forward day (``30 2 * * *`` in Europe/Berlin on the last Sunday
  of March) fires once, at the first valid instant after the gap (03:00 local).
- A wall-clock time that exists twice on a fall-back day fires once, at its first occurrence (02:30 CEST, not again
  at 02:30 CET) when the hour field is fixed. A schedule whose hour field is a wildcard or a step (``*/30 * * * *``)
  fires at every matching real instant, both repeated hours included: each of those is a different moment.

``Every(seconds)`` ticks are aligned to the Unix epoch (multiples of the interval since 1970-01-01 UTC), so every
beat replica computes the same ticks without talking to the others; that is what lets a tick carry an idempotency
key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from taskfleet.errors import ConfigurationError

__all__ = ["MIN_INTERVAL_S", "CronField", "Every", "Schedule", "crontab", "next_run", "next_runs", "to_schedule",
           "zone"]

#: Shortest ``Every`` interval: beat checks its schedule a few times a second, so shorter ticks would bunch up.
MIN_INTERVAL_S = 1.0


#: What a ``crontab`` field takes, as Celery's does: a cron field string (``"*/15"``, ``"10, 17"``: spaces after
#: commas allowed), a number, or numbers as a list, tuple, set or ``range``.
CronField = str | int | Iterable[int]
_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_WORD = re.compile(r"[A-Za-z]+")
_COMMA = re.compile(r"\s*,\s*")


@dataclass(frozen=True, slots=True, init=False)
class crontab:  # lower case, as Celery users know it
    """Cron fields, evaluated in the app's ``timezone``: ``crontab(minute=0, hour="10, 17")``, positional in
    Celery's order (``minute``, ``hour``, ``day_of_week``, ``day_of_month``, ``month_of_year``).

    Each field takes what Celery's takes (``CronField``): the usual cron syntax (``*``, numbers, ranges ``1-5``,
    steps ``*/15`` or ``0-30/10`` and comma lists, spaces after the commas allowed), a number (``hour=10``), or
    numbers as a list, tuple or set (``{0, 30}``) or a ``range`` (``range(9, 18)``: 9 to 17). ``day_of_week`` is
    0-6 with 0 = Sunday, or day names (``mon``-``sun``, or whole: ``sunday``). As in cron, when both
    ``day_of_month`` and ``day_of_week`` are restricted a day matching either one fires. Anything else is a
    ``ConfigurationError`` naming the field. The fields are kept as cron strings (``crontab(hour=10) ==
    crontab(hour="10")``).
    """

    minute: str
    hour: str
    day_of_week: str
    day_of_month: str
    month_of_year: str

    def __init__(self, minute: CronField = "*", hour: CronField = "*", day_of_week: CronField = "*",
                 day_of_month: CronField = "*", month_of_year: CronField = "*") -> None:
        for name, value in zip(_FIELDS, (minute, hour, day_of_week, day_of_month, month_of_year), strict=True):
            object.__setattr__(self, name, _cron_field(name, value))
        try:
            CronSim(self.expression, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ConfigurationError(f"invalid cron schedule {self.expression!r}: {exc}") from exc

    @classmethod
    def parse(cls, expression: str) -> crontab:
        """``crontab.parse("*/5 * * * *")``: the five standard fields, minute first."""
        fields = expression.split() if isinstance(expression, str) else []
        if len(fields) != 5:
            raise ConfigurationError(f"a cron expression has 5 fields (minute hour day month weekday): {expression!r}")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute=minute, hour=hour, day_of_week=day_of_week, day_of_month=day_of_month,
                   month_of_year=month_of_year)

    @property
    def expression(self) -> str:
        """The five-field cron expression (minute hour day-of-month month day-of-week)."""
        return f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} {self.day_of_week}"

    def __str__(self) -> str:
        return f"cron({self.expression})"


@dataclass(frozen=True, slots=True)
class Every:
    """A fixed interval in seconds (>= ``MIN_INTERVAL_S``), ticks aligned to the Unix epoch."""

    seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float) or not (
                math.isfinite(self.seconds) and self.seconds >= MIN_INTERVAL_S):
            raise ConfigurationError(f"an interval must be a number of seconds >= {MIN_INTERVAL_S}, "
                                     f"got {self.seconds!r}")

    def __str__(self) -> str:
        return f"every {self.seconds:g}s"


Schedule = crontab | Every


def _cron_field(name: str, value: object) -> str:
    """One ``crontab`` field as a cron field string (see ``CronField``); ``ConfigurationError`` naming ``name``."""
    text: str | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = _COMMA.sub(",", value.strip())
        if len(text.split()) != 1:
            text = None  # empty, or two fields in one
        elif name == "day_of_week":
            text = _WORD.sub(_day_abbreviation, text)
    elif isinstance(value, range) and len(value) > 1 and value.step == 1:
        text = f"{value.start}-{value[-1]}"
    elif isinstance(value, range | list | tuple | set | frozenset) and len(value) and all(
            isinstance(n, int) and not isinstance(n, bool) for n in value):
        text = ",".join(str(n) for n in sorted(value))
    if text is not None:
        return text
    raise ConfigurationError(f"crontab {name}= must be one cron field like '*/5' or '10, 17', a number, or numbers "
                             f"(a list, tuple, set or range), got {value!r}")


def _day_abbreviation(match: re.Match[str]) -> str:
    """A day name in a ``day_of_week`` field as cron's three letters (``sunday``, ``Sun``, ``tues`` -> ``sun``,
    ``sun``, ``tue``); any other word is left for the cron parser to refuse."""
    word = match.group(0).lower()
    for day in _DAYS:
        if len(word) >= 3 and day.startswith(word):
            return day[:3]
    return match.group(0)


def to_schedule(value: Schedule | float | int | timedelta | str) -> Schedule:
    """A schedule from what users write: a ``crontab``/``Every``, seconds (number or ``timedelta``) or a cron
    expression string."""
    if isinstance(value, crontab | Every):
        return value
    if isinstance(value, timedelta):
        return Every(value.total_seconds())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Every(float(value))
    if isinstance(value, str):
        return crontab.parse(value)
    raise ConfigurationError(f"a schedule is seconds, a timedelta, a cron string or a crontab, got {value!r}")


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``"Europe/Berlin"``); an unknown one is a ``ConfigurationError``."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {name!r}: use an IANA name like 'Europe/Berlin'") from exc


def next_run(spec: Schedule, after: datetime, tz: tzinfo = UTC) -> datetime:
    """The first fire time of ``spec`` strictly after ``after`` (an aware datetime). Crontab fields are read in
    ``tz``; the result is in UTC (a local time in a repeated DST hour would compare unequal to everything in other
    zones, PEP 495). Pure: no clock, no I/O."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("next_run needs an aware datetime (naive times are ambiguous around DST)")
    if isinstance(spec, Every):
        # Whole milliseconds, so float noise can never make two replicas disagree about a tick.
        step_ms = round(spec.seconds * 1000)
        after_ms = math.floor(after.timestamp() * 1000)
        return datetime.fromtimestamp((after_ms // step_ms + 1) * step_ms / 1000, UTC)
    return next(CronSim(spec.expression, after.astimezone(tz))).astimezone(UTC)


def next_runs(spec: Schedule, after: datetime, count: int, tz: tzinfo = UTC) -> list[datetime]:
    """The next ``count`` fire times after ``after`` (``taskfleet beat --list`` shows five)."""
    runs: list[datetime] = []
    for _ in range(count):
        after = next_run(spec, after, tz)
        runs.append(after)
    return runs
