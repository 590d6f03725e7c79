"""In-memory stand-ins for the dashboard's interfaces (``model.History``, ``model.KubeSource``), for the web app's
specifications: they answer from lists, filter as the real store does, and record the queries they were asked."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskfleet.dashboard.model import (
    Bucket,
    KubeEvent,
    QueueSample,
    ScaleSample,
    TaskEntry,
    TaskEvent,
    TaskPage,
    TaskQuery,
    TaskQueueView,
)


@dataclass
class FakeHistory:
    """A history of the given tasks (newest first by ``first_seen_at``); the cursor is the last row's task id."""

    entries: list[TaskEntry] = field(default_factory=list)
    events: list[TaskEvent] = field(default_factory=list)
    bucket_rows: list[Bucket] = field(default_factory=list)
    queue_rows: list[QueueSample] = field(default_factory=list)
    scale_rows: list[ScaleSample] = field(default_factory=list)
    queries: list[TaskQuery] = field(default_factory=list)
    bucket_calls: list[dict[str, object]] = field(default_factory=list)

    def _matches(self, e: TaskEntry, q: TaskQuery) -> bool:
        return ((q.name is None or e.name == q.name) and (q.state is None or e.state == q.state)
                and (q.queue is None or e.queue == q.queue) and (q.worker is None or e.worker == q.worker)
                and (q.task_id is None or e.task_id.startswith(q.task_id))
                and (q.text is None or q.text in f"{e.args or ''} {e.kwargs or ''}")
                and (q.since is None or e.first_seen_at >= q.since)
                and (q.until is None or e.first_seen_at <= q.until))

    def tasks(self, query: TaskQuery) -> TaskPage:
        self.queries.append(query)
        rows = sorted((e for e in self.entries if self._matches(e, query)), key=lambda e: -e.first_seen_at)
        if query.before is not None:
            ids = [e.task_id for e in rows]
            rows = rows[ids.index(query.before) + 1:] if query.before in ids else []
        page = rows[:query.limit]
        more = len(rows) > query.limit
        return TaskPage(page, page[-1].task_id if more and page else None)

    def task(self, task_id: str) -> TaskEntry | None:
        return next((e for e in self.entries if e.task_id == task_id), None)

    def timeline(self, task_id: str) -> list[TaskEvent]:
        return sorted((e for e in self.events if e.task_id == task_id), key=lambda e: e.timestamp)

    def children(self, task_id: str) -> list[TaskEntry]:
        return [e for e in self.entries if e.parent_id == task_id]

    def workflow(self, root_id: str, *, limit: int = 500) -> list[TaskEntry]:
        return [e for e in self.entries if e.root_id == root_id or e.task_id == root_id][:limit]

    def buckets(self, *, since: float, until: float, step_s: float, name: str | None = None,
                queue: str | None = None) -> list[Bucket]:
        self.bucket_calls.append({"since": since, "until": until, "step_s": step_s, "name": name, "queue": queue})
        return list(self.bucket_rows)

    def task_names(self) -> list[str]:
        return sorted({e.name for e in self.entries if e.name})

    def queue_samples(self, *, since: float, until: float, queue: str | None = None) -> list[QueueSample]:
        return [s for s in self.queue_rows if queue is None or s.queue == queue]

    def scale_samples(self, *, since: float, until: float, namespace: str | None = None,
                      name: str | None = None) -> list[ScaleSample]:
        return [s for s in self.scale_rows if (namespace is None or s.namespace == namespace)
                and (name is None or s.name == name)]


@dataclass
class FakeKube:
    """TaskQueues and their Events, as given."""

    views: list[TaskQueueView] = field(default_factory=list)
    kube_events: dict[tuple[str, str], list[KubeEvent]] = field(default_factory=dict)

    def task_queues(self) -> list[TaskQueueView]:
        return list(self.views)

    def events(self, namespace: str, name: str, *, limit: int = 50) -> list[KubeEvent]:
        return self.kube_events.get((namespace, name), [])[:limit]
