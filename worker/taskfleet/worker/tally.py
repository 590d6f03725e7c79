"""What a worker has finished since it started: the counts of its heartbeat record (``processed``, ``failed``) and
of ``inspect stats`` (``total`` per task name, as Celery's).

The supervisor counts from its children's ``Done`` samples and its own hard time limits, the same outcomes its
metrics count (``taskfleet.worker.metrics.OUTCOMES``). Unlike ``/metrics`` it needs no Prometheus server: a worker
without a health port still reports them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

#: Outcomes that count as failed: the task raised (FAILURE), was dead-lettered, or ran past its hard time limit.
FAILED_OUTCOMES = frozenset({"failure", "dead_lettered", "time_limit"})
#: Outcomes that are not a task processed here: a redelivery of a task whose final state was already stored (by
#: this worker or another) is acked unrun.
UNCOUNTED_OUTCOMES = frozenset({"duplicate"})


class Tally:
    """Counts of finished tasks; written and read by the supervisor's threads (each update is one ``Counter``
    increment and two integer additions, so a reader on another thread sees a count at most one task behind)."""

    def __init__(self) -> None:
        self.processed = 0
        self.failed = 0
        self._by_task: Counter[str] = Counter()

    def finished(self, task: str, outcome: str) -> None:
        """Count one task that ended with ``outcome`` (``success``, ``failure``, ``retry``, ``revoked``...)."""
        if outcome in UNCOUNTED_OUTCOMES:
            return
        self._by_task[task] += 1
        self.processed += 1
        if outcome in FAILED_OUTCOMES:
            self.failed += 1

    def by_task(self) -> Mapping[str, int]:
        """Tasks finished per task name (Celery's ``stats()["total"]``)."""
        return dict(self._by_task)
