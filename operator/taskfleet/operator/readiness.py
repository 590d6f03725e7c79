"""The operator's readiness (``GET /readyz`` on the metrics port): Ready only while it does its job.

kopf's ``/healthz`` says the process runs; it stayed 200 for minutes while kopf retried a DNS error and had never
reached the API server, so ``helm install --wait`` passed for an operator that did nothing. Readiness needs both:

- kopf's reactor has started: its ready flag is raised after the startup activities, and it is what releases the
  TaskQueue watch streams (``watching``);
- the operator listed TaskQueues, with the credentials and in the scope of that watch, less than
  ``stale_after_s`` ago (a check every ``check_interval_s``, on a thread of its own).

Once the API server stops answering for ``stale_after_s``, ``/readyz`` answers 503 again (the Deployment's
``readinessProbe`` takes the pod out of the Service; liveness is left to kopf).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_CHECK_INTERVAL_S", "DEFAULT_STALE_AFTER_S", "Readiness", "Verdict", "verdict"]

#: Seconds between two checks of the Kubernetes API (one TaskQueue list of at most one item).
DEFAULT_CHECK_INTERVAL_S = 10.0
#: Seconds without an answer from the Kubernetes API after which the operator is not Ready any more: three checks,
#: so one slow request does not flap the pod out of its Service.
DEFAULT_STALE_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the operator is Ready, and why not (the body of a 503)."""

    ready: bool
    reason: str


def verdict(*, watching: bool, last_contact_s: float | None, last_error: str | None, now_s: float,
            stale_after_s: float) -> Verdict:
    """Ready when kopf's watch has started and the API answered within ``stale_after_s`` seconds of ``now_s``
    (``last_contact_s`` is on the same monotonic clock; None: never)."""
    if last_contact_s is None:
        why = f": {last_error}" if last_error else ""
        return Verdict(False, f"the Kubernetes API has not answered yet{why}")
    age_s = now_s - last_contact_s
    if age_s > stale_after_s:
        why = f": {last_error}" if last_error else ""
        return Verdict(False, f"the Kubernetes API has not answered for {age_s:.0f} s{why}")
    if not watching:
        return Verdict(False, "the Kubernetes API answers; the TaskQueue watch has not started yet")
    return Verdict(True, "ok")


class Readiness:
    """What the readiness checks saw, read by the HTTP server's threads (``probe``).

    Args:
        stale_after_s: seconds without an API answer after which the operator is not Ready.
        watching: set when kopf's reactor has started (the ``ready_flag`` given to ``kopf.operator``).
        clock: a monotonic clock in seconds.
    """

    def __init__(self, *, stale_after_s: float = DEFAULT_STALE_AFTER_S, watching: threading.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stale_after_s = stale_after_s
        self._watching = watching
        self._clock = clock
        self._lock = threading.Lock()
        self._last_contact_s: float | None = None
        self._last_error: str | None = None

    def reached(self) -> None:
        """The API server answered a check."""
        with self._lock:
            self._last_contact_s = self._clock()
            self._last_error = None

    def failed(self, error: str) -> None:
        """A check failed (unreachable, refused, the CRD not served): ``error`` says why, with no credential."""
        with self._lock:
            self._last_error = error

    def verdict(self) -> Verdict:
        with self._lock:
            last_contact_s, last_error = self._last_contact_s, self._last_error
        return verdict(watching=self._watching.is_set(), last_contact_s=last_contact_s, last_error=last_error,
                       now_s=self._clock(), stale_after_s=self._stale_after_s)

    def probe(self) -> tuple[bool, str]:
        """``(ready, reason)`` for the HTTP server's ``/readyz``."""
        seen = self.verdict()
        return seen.ready, seen.reason
