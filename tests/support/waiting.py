"""The one polling helper tests may use: bounded, with a message that says what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02, message: str = "") -> None:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; raise ``AssertionError``
    with ``message`` when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)
