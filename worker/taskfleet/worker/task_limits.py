"""A worker's runtime overrides of its tasks' rate and time limits (``app.control.rate_limit`` and
``time_limit``), and what the executor reads to know a task's limits now.

The supervisor keeps the overrides (``LimitOverrides``) and sends the whole table to every child when it changes
(``events.Limits``); a child forked later inherits it. A task without an override has the limits of its
``@app.task`` options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskfleet.rates import Rate, parse_rate
from taskfleet.task import TaskOptions


@dataclass(frozen=True, slots=True)
class LimitOverrides:
    """Per task name: a rate limit (the Celery string; None: no limit) and soft and hard time limits (seconds;
    None: none). A task named in neither table keeps its options'."""

    rates: dict[str, str | None] = field(default_factory=dict)
    time_limits: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def with_rate(self, task: str, rate_limit: str | None) -> LimitOverrides:
        return LimitOverrides({**self.rates, task: rate_limit}, self.time_limits)

    def with_time_limits(self, task: str, soft_s: float | None, hard_s: float | None) -> LimitOverrides:
        return LimitOverrides(self.rates, {**self.time_limits, task: (soft_s, hard_s)})


class TaskLimits:
    """The limits a child applies now: its tasks' options under the supervisor's latest overrides. The
    background thread replaces the overrides whole (``apply``); the main thread reads them."""

    def __init__(self, overrides: LimitOverrides | None = None) -> None:
        self._overrides = overrides or LimitOverrides()
        self._parsed: dict[str | None, Rate | None] = {}

    @property
    def overrides(self) -> LimitOverrides:
        return self._overrides

    def apply(self, overrides: LimitOverrides) -> None:
        self._overrides = overrides

    def rate(self, task: str, options: TaskOptions) -> Rate | None:
        """The rate limit of ``task`` now: its override, else its ``rate_limit`` option."""
        rates = self._overrides.rates
        text = rates.get(task, options.rate_limit)
        if text not in self._parsed:
            self._parsed[text] = parse_rate(text)
        return self._parsed[text]

    def time_limits(self, task: str, options: TaskOptions) -> tuple[float | None, float | None]:
        """The soft and hard time limits of ``task`` now (seconds; None: none)."""
        override = self._overrides.time_limits.get(task)
        return override if override is not None else (options.soft_time_limit, options.time_limit)


def check_time_limits(soft: Any, hard: Any) -> tuple[float | None, float | None]:
    """Time limits from a control request: numbers > 0 or None, the soft one below the hard one. ``ValueError``
    saying what is wrong otherwise."""
    limits: list[float | None] = []
    for name, value in (("soft", soft), ("hard", hard)):
        if value is None:
            limits.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{name} time limit must be a number of seconds > 0 or None, got {value!r}")
        limits.append(float(value))
    soft_s, hard_s = limits
    if soft_s is not None and hard_s is not None and soft_s >= hard_s:
        raise ValueError("the soft time limit must be smaller than the hard one")
    return soft_s, hard_s
