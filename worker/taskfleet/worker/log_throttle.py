"""A repeating failure logged once, then at most once a minute: a background thread that retries a broker call
every two seconds while the broker is down must not write thirty warnings a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from taskfleet.worker.logging import Logger

#: After the first warning of a run of failures, at most one more per this many seconds (with the count between).
DEFAULT_EVERY_S = 60.0


class LogThrottle:
    """Warnings of one repeating failure (``event``), rate-limited; an info line when it stops failing."""

    def __init__(self, log: Logger, event: str, *, every_s: float = DEFAULT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._event = event
        self._every_s = every_s
        self._clock = clock
        self._failures = 0  # in the current run of failures
        self._unlogged = 0  # failures since the last warning
        self._logged_at = 0.0

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def failed(self, error: BaseException | str, **fields: Any) -> None:
        """Count one failure; warn when it is the first of a run or the last warning is ``every_s`` old."""
        self._failures += 1
        self._unlogged += 1
        now = self._clock()
        if self._failures == 1 or now - self._logged_at >= self._every_s:
            self._log.warning(self._event, error=str(error), failures=self._failures,
                              since_last_warning=self._unlogged - 1, **fields)
            self._logged_at = now
            self._unlogged = 0

    def recovered(self, event: str, **fields: Any) -> None:
        """Log ``event`` (info) when this ends a run of failures; nothing otherwise."""
        if self._failures:
            self._log.info(event, failures=self._failures, **fields)
        self._failures = 0
        self._unlogged = 0
