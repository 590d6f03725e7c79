"""How the dashboard's history is kept: where its SQLite file is, how long and how much it keeps, how often the
ingester samples queues and prunes."""

from __future__ import annotations

from dataclasses import dataclass

from taskfleet.errors import ConfigurationError

#: Seconds the history keeps a task (by its first event) and a sample: a week.
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
#: Tasks the history keeps at most; the oldest go first (about 1 KB each on disk with its timeline and indexes).
DEFAULT_MAX_TASKS = 2_000_000
#: Seconds between two samples of the queues' depths (and of the TaskQueues' replicas on Kubernetes).
DEFAULT_SAMPLE_INTERVAL_S = 5.0
#: Seconds between two prunes of what is older than the retention, or beyond ``max_tasks``.
DEFAULT_PRUNE_INTERVAL_S = 60.0


@dataclass(frozen=True, kw_only=True)
class HistorySettings:
    """The history's file and limits. Keyword-only; an unknown option raises ``TypeError``."""

    #: The SQLite file of the history (created with its folder's permissions; WAL mode, so two more files beside it).
    path: str
    #: Seconds a task and a sample are kept, counted from the task's first event.
    retention_s: float = DEFAULT_RETENTION_S
    #: Tasks kept at most, whatever their age: the oldest are pruned first.
    max_tasks: int = DEFAULT_MAX_TASKS
    #: Seconds between two samples of queue depths and replicas.
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    #: Seconds between two prunes.
    prune_interval_s: float = DEFAULT_PRUNE_INTERVAL_S

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigurationError("the history needs a path for its SQLite file")
        if self.retention_s <= 0:
            raise ConfigurationError("retention_s must be > 0")
        if self.max_tasks < 1:
            raise ConfigurationError("max_tasks must be >= 1")
        if self.sample_interval_s <= 0:
            raise ConfigurationError("sample_interval_s must be > 0")
        if self.prune_interval_s <= 0:
            raise ConfigurationError("prune_interval_s must be > 0")
