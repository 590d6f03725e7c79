"""Rate limits as Celery spells them: ``"10/s"``, ``"100/m"``, ``"1000/h"``, or a plain number (per second).

``@app.task(rate_limit="100/m")`` and ``app.control.rate_limit(name, "10/s")`` take these; the worker spaces the
task's starts ``Rate.interval_s`` apart (taskfleet.worker.rate_limiter).
"""

from __future__ import annotations

from dataclasses import dataclass

from taskfleet.errors import ConfigurationError

_PER_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` task starts per ``per_s`` seconds."""

    count: float
    per_s: float

    @property
    def interval_s(self) -> float:
        """Seconds between two starts at this rate."""
        return self.per_s / self.count

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(self.per_s)
        count = int(self.count) if self.count == int(self.count) else self.count
        return f"{count}/{unit}" if unit else f"{count}/{self.per_s}s"


def parse_rate(text: str | float | int | None) -> Rate | None:
    """``"10/s"`` -> 10 per second, ``"100/m"``, ``"1000/h"``, ``"5"`` or ``5`` -> 5 per second; None, ``""`` or 0
    -> no limit (as in Celery). ``ConfigurationError`` for anything else."""
    if text is None or text == "" or text == 0:
        return None
    if isinstance(text, bool):
        raise ConfigurationError(f"not a rate limit: {text!r}")
    raw = str(text).strip()
    count_text, _, unit = raw.partition("/")
    try:
        count = float(count_text)
    except ValueError as exc:
        raise ConfigurationError(f"not a rate limit: {text!r} (use e.g. '10/s', '100/m', '1000/h')") from exc
    per_s = _PER_S.get(unit.strip().lower()[:1] if unit else "s")
    if per_s is None or count < 0 or count != count or count == float("inf"):
        raise ConfigurationError(f"not a rate limit: {text!r} (use e.g. '10/s', '100/m', '1000/h')")
    return None if count == 0 else Rate(count, per_s)
