"""The HTML pages, rendered on the server from the same calls as the JSON API; ``static/dashboard.js`` then keeps
their live parts (tables, charts) fresh from the API. Every URL in a page is built from the request's root path,
so the pages work under a path prefix."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, HTTPException
from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.dashboard.model import STATES
from taskfleet.dashboard.web import api_fleet
from taskfleet.dashboard.web.api_tasks import query_from, task_detail, time_range
from taskfleet.dashboard.web.deps import Ctx, Who, principal
from taskfleet.dashboard.web.fleet import FleetError

router = APIRouter(dependencies=[Depends(principal)], include_in_schema=False)

NAV = (("/", "overview", "Overview"), ("/queues", "queues", "Queues"), ("/workers", "workers", "Workers"),
       ("/tasks", "tasks", "Tasks"), ("/autoscaling", "autoscaling", "Autoscaling"), ("/actions", "actions", "Actions"))
NONE = "\N{EN DASH}"  # what a page shows for no value
RANGES = ((900, "15 min"), (3600, "1 hour"), (6 * 3600, "6 hours"), (86400, "1 day"), (7 * 86400, "7 days"))


def ts(value: float | None) -> str:
    """Unix seconds as ``2026-12-04 12:00:05 UTC`` (``NONE`` for none)."""
    if value is None:
        return NONE
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | None) -> str:
    """A runtime: ``0.012 s``, ``3.40 s``, ``125 s`` (``NONE`` for none)."""
    if value is None:
        return NONE
    return f"{value:.3f} s" if value < 1 else f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def make_templates(directory: str) -> Jinja2Templates:
    """Our templates, every value HTML-escaped (task args and reasons are whatever a producer sent)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(directory), autoescape=True)
    templates = Jinja2Templates(env=env)
    templates.env.filters["ts"] = ts
    templates.env.filters["seconds"] = seconds
    return templates


def url_for_root(request: Request) -> Callable[[str], str]:
    root = request.scope.get("root_path", "").rstrip("/")
    return lambda path: root + path


def render(request: Request, template: str, *, page: str, title: str, status_code: int = 200,
           **values: Any) -> Response:
    """A page with the layout's values: who is asking, the root path, the nav, the refresh interval."""
    ctx = request.app.state.ctx
    templates: Jinja2Templates = request.app.state.templates
    context = {
        "who": request.state.principal, "root": request.scope.get("root_path", "").rstrip("/"),
        "url": url_for_root(request), "nav": NAV, "page": page, "title": title,
        "app_name": ctx.fleet.app.name, "refresh_ms": int(ctx.settings.refresh_interval_s * 1000),
        "done": request.query_params.get("done"), **values,
    }
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def _queues(ctx: Ctx) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return ctx.fleet.queues(), None
    except FleetError as exc:
        return [], f"the broker did not answer: {exc}"


#: Rows of the overview's per-task and per-queue tables.
MAX_BREAKDOWN_ROWS = 20


def summary(ctx: Ctx, *, since: float, until: float, name: str | None = None,
            queue: str | None = None) -> dict[str, Any]:
    """Totals over ``since``..``until`` as one bucket (so the percentiles are over the whole range)."""
    buckets = ctx.history.buckets(since=since, until=until, step_s=max(until - since, 1.0), name=name, queue=queue)
    ok, failed = sum(b.succeeded for b in buckets), sum(b.failed for b in buckets)
    p95 = [b.p95_s for b in buckets if b.p95_s is not None]
    return {"name": name, "queue": queue, "succeeded": ok, "failed": failed,
            "retried": sum(b.retried for b in buckets),
            "failure_rate": f"{100 * failed / (ok + failed):.1f}%" if ok + failed else NONE,
            "p95_s": max(p95) if p95 else None}


@router.get("/")
def overview(request: Request, ctx: Ctx, name: str = "", queue: str = "", range_s: int = 3600) -> Response:
    range_s = range_s if any(range_s == r for r, _ in RANGES) else 3600
    until = time.time()
    since, _, step = time_range(until - range_s, until, ctx.settings.default_range_s)
    buckets = ctx.history.buckets(since=since, until=until, step_s=step, name=name or None, queue=queue or None)
    ok, failed = sum(b.succeeded for b in buckets), sum(b.failed for b in buckets)
    totals = {"succeeded": ok, "failed": failed, "retried": sum(b.retried for b in buckets),
              "failure_rate": f"{100 * failed / (ok + failed):.1f}%" if ok + failed else NONE}
    queues, error = _queues(ctx)
    names = ctx.history.task_names()
    by_task = [summary(ctx, since=since, until=until, name=n) for n in names[:MAX_BREAKDOWN_ROWS]]
    by_queue = [summary(ctx, since=since, until=until, queue=q["queue"]) for q in queues[:MAX_BREAKDOWN_ROWS]]
    stats_query = urlencode({k: v for k, v in (("name", name), ("queue", queue)) if v} | {"range_s": range_s})
    return render(request, "overview.html", page="overview", title="Overview", totals=totals, error=error,
                  task_names=names, queue_names=[q["queue"] for q in queues], name=name, queue=queue,
                  range_s=range_s, ranges=RANGES, stats_query=stats_query, by_task=by_task, by_queue=by_queue)


@router.get("/queues")
def queues_page(request: Request, ctx: Ctx, dead: str = "") -> Response:
    queues, error = _queues(ctx)
    letters: list[dict[str, Any]] = []
    if dead and not error:
        try:
            letters = ctx.fleet.dead_letters(dead)
        except FleetError as exc:
            error = str(exc)
    return render(request, "queues.html", page="queues", title="Queues", queues=queues, error=error,
                  dead_queue=dead or None, dead_letters=letters)


@router.get("/workers")
def workers_page(request: Request, ctx: Ctx) -> Response:
    try:
        workers, error = ctx.fleet.workers(), None
    except FleetError as exc:
        workers, error = [], f"the broker did not answer: {exc}"
    return render(request, "workers.html", page="workers", title="Workers", workers=workers, error=error)


def _when(text: str) -> float | None:
    """A time filter: Unix seconds, or an HTML ``datetime-local`` value read as UTC; blank: none."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise HTTPException(422, f"not a time: {text!r}") from exc


def _local(value: float | None) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S") if value is not None else ""


@router.get("/tasks")
def tasks_page(request: Request, ctx: Ctx, name: str = "", state: str = "", queue: str = "", worker: str = "",
               task_id: str = "", text: str = "", since: str = "", until: str = "", before: str = "",
               limit: int = 50) -> Response:
    start, end = _when(since), _when(until)
    query = query_from(name=name, state=state, queue=queue, worker=worker, task_id=task_id, text=text,
                       since=start, until=end, before=before, limit=limit)
    found = ctx.history.tasks(query)
    next_url = None
    if found.next_cursor:
        params = {k: v for k, v in request.query_params.items() if k not in ("before", "done") and v}
        next_url = url_for_root(request)("/tasks") + "?" + urlencode(params | {"before": found.next_cursor})
    f = {"name": query.name, "state": query.state, "queue": query.queue, "worker": query.worker,
         "task_id": query.task_id, "text": query.text, "since_text": _local(start), "until_text": _local(end)}
    return render(request, "tasks.html", page="tasks", title="Tasks", tasks=found.tasks, next_url=next_url, f=f,
                  states=STATES, task_names=ctx.history.task_names())


@router.get("/tasks/{task_id}")
def task_page(request: Request, ctx: Ctx, task_id: str) -> Response:
    entry = ctx.history.task(task_id)
    if entry is None:
        return render(request, "base.html", page="tasks", title=f"Task {task_id}", status_code=404,
                      error=f"No task {task_id} in the history (yet: a task appears with its first event).")
    return render(request, "task.html", page="tasks", title=f"Task {entry.name or task_id}",
                  detail=task_detail(ctx, entry))


@router.get("/autoscaling")
def autoscaling_page(request: Request, ctx: Ctx) -> Response:
    data = api_fleet.autoscaling(ctx)
    return render(request, "autoscaling.html", page="autoscaling", title="Autoscaling", enabled=data["enabled"],
                  task_queues=data["task_queues"])


@router.get("/actions")
def actions_page(request: Request, ctx: Ctx, who: Who) -> Response:
    queues, error = _queues(ctx) if who.is_admin else ([], None)
    return render(request, "actions.html", page="actions", title="Actions", error=error,
                  queue_names=[q["queue"] for q in queues], task_names=ctx.history.task_names())
