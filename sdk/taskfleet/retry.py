"""Retry timing: pure functions, table-tested."""

from __future__ import annotations

import random
from collections.abc import Callable

DEFAULT_RETRY_DELAY_S = 180.0
DEFAULT_RETRY_BACKOFF_MAX_S = 600.0
DEFAULT_MAX_RETRIES = 3


def retry_delay_s(
    *,
    retries: int,
    backoff: bool | float,
    backoff_max_s: float = DEFAULT_RETRY_BACKOFF_MAX_S,
    jitter: bool = True,
    default_delay_s: float = DEFAULT_RETRY_DELAY_S,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``retries + 1``.

    Without ``backoff`` every retry waits ``default_delay_s``. With ``backoff`` (``True`` = 1 s base, or a number of
    seconds) the wait is ``base * 2**retries`` capped at ``backoff_max_s``; ``jitter`` then picks uniformly in
    ``[wait/2, wait]`` so that a burst of failures does not retry in lock-step yet still backs off.
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    if backoff is False:
        return max(0.0, default_delay_s)
    base = 1.0 if backoff is True else float(backoff)
    wait = min(backoff_max_s, base * (2.0 ** min(retries, 62)))
    if jitter:
        wait = wait / 2 + rng() * wait / 2
    return max(0.0, wait)
