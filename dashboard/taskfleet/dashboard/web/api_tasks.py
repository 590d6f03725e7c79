"""The JSON API of the history: tasks (filtered, paged with a cursor), one task with its timeline and workflow,
task names, and outcome buckets over time (throughput, failures, runtime percentiles)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from taskfleet.dashboard.model import STATES, TaskEntry, TaskQuery
from taskfleet.dashboard.web.deps import Ctx, principal

router = APIRouter(prefix="/api", tags=["history"], dependencies=[Depends(principal)])

#: A chart has about this many points whatever its range: the step is range / MAX_POINTS, at least 10 s.
MAX_POINTS = 120
MIN_STEP_S = 10.0
MAX_PAGE = 500


def task_json(entry: TaskEntry) -> dict[str, Any]:
    return asdict(entry)


def query_from(*, name: str | None, state: str | None, queue: str | None, worker: str | None,
               task_id: str | None, text: str | None, since: float | None, until: float | None,
               before: str | None, limit: int) -> TaskQuery:
    """A ``TaskQuery`` from filter fields, blanks as None (an HTML form sends empty fields)."""
    def blank(value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    if state and state not in STATES:
        raise HTTPException(422, f"unknown state {state!r}: one of {', '.join(STATES)}")
    return TaskQuery(name=blank(name), state=blank(state), queue=blank(queue), worker=blank(worker),
                     task_id=blank(task_id), text=blank(text), since=since, until=until, before=blank(before),
                     limit=max(1, min(limit, MAX_PAGE)))


@router.get("/tasks", summary="Tasks in the history, newest first, filtered; next page with `before=next_cursor`")
def list_tasks(ctx: Ctx, name: str | None = None, state: str | None = None, queue: str | None = None,
               worker: str | None = None, task_id: str | None = None, text: str | None = None,
               since: float | None = None, until: float | None = None, before: str | None = None,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50) -> dict[str, Any]:
    query = query_from(name=name, state=state, queue=queue, worker=worker, task_id=task_id, text=text,
                       since=since, until=until, before=before, limit=limit)
    page = ctx.history.tasks(query)
    return {"tasks": [task_json(t) for t in page.tasks], "next_cursor": page.next_cursor}


@router.get("/tasks/{task_id}", summary="One task: its row, timeline, children and workflow")
def get_task(ctx: Ctx, task_id: str) -> dict[str, Any]:
    entry = ctx.history.task(task_id)
    if entry is None:
        raise HTTPException(404, f"no task {task_id!r} in the history")
    return task_detail(ctx, entry)


def task_detail(ctx: Ctx, entry: TaskEntry) -> dict[str, Any]:
    """A task with its timeline, its children, and its workflow's other tasks (when it has a root)."""
    history = ctx.history
    workflow = history.workflow(entry.root_id) if entry.root_id and entry.root_id != entry.task_id else []
    if not workflow and entry.root_id == entry.task_id:
        workflow = history.workflow(entry.task_id)
    return {"task": task_json(entry), "timeline": [asdict(e) for e in history.timeline(entry.task_id)],
            "children": [task_json(c) for c in history.children(entry.task_id)],
            "workflow": [task_json(w) for w in workflow if w.task_id != entry.task_id]}


@router.get("/task-names", summary="Every task name seen in the history")
def task_names(ctx: Ctx) -> list[str]:
    return ctx.history.task_names()


def time_range(since: float | None, until: float | None, default_range_s: float) -> tuple[float, float, float]:
    """``(since, until, step_s)``: the last ``default_range_s`` by default, about ``MAX_POINTS`` steps."""
    end = until if until is not None else time.time()
    start = since if since is not None else end - default_range_s
    if start >= end:
        raise HTTPException(422, "since must be before until")
    return start, end, max(MIN_STEP_S, (end - start) / MAX_POINTS)


@router.get("/stats", summary="Outcomes per time bucket: succeeded, failed, retried, runtime p50/p95/p99 (s)")
def stats(ctx: Ctx, since: float | None = None, until: float | None = None, step_s: float | None = None,
          name: str | None = None, queue: str | None = None) -> dict[str, Any]:
    start, end, step = time_range(since, until, ctx.settings.default_range_s)
    if step_s is not None:
        step = max(MIN_STEP_S, step_s)
    buckets = ctx.history.buckets(since=start, until=end, step_s=step, name=name or None, queue=queue or None)
    return {"since": start, "until": end, "step_s": step, "name": name, "queue": queue,
            "buckets": [asdict(b) for b in buckets]}
