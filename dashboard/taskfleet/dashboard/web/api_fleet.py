"""The JSON API of the live fleet: queues (live and as a trend), dead letters, workers, autoscaling, and who the
caller is."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends

from taskfleet.dashboard.web.api_tasks import time_range
from taskfleet.dashboard.web.deps import Ctx, Who, principal

router = APIRouter(prefix="/api", tags=["fleet"], dependencies=[Depends(principal)])


@router.get("/queues", summary="Every queue's ready, in-flight, delayed and dead counts now (null: not countable)")
def queues(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.fleet.queues()


@router.get("/queues/{queue}/dead-letters", summary="A queue's dead letters with their reasons, oldest first")
def dead_letters(ctx: Ctx, queue: str, limit: int = 100) -> list[dict[str, Any]]:
    return ctx.fleet.dead_letters(queue, limit=max(1, min(limit, 1000)))


@router.get("/queue-samples", summary="Queue counts over time, as the history sampled them")
def queue_samples(ctx: Ctx, since: float | None = None, until: float | None = None,
                  queue: str | None = None) -> dict[str, Any]:
    start, end, _ = time_range(since, until, ctx.settings.default_range_s)
    samples = ctx.history.queue_samples(since=start, until=end, queue=queue or None)
    return {"since": start, "until": end, "samples": [asdict(s) for s in samples]}


@router.get("/workers", summary="The live workers (a worker leaves when its heartbeat record expires)")
def workers(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.fleet.workers()


@router.get("/autoscaling", summary="Each TaskQueue with its conditions, Events and replicas over time")
def autoscaling(ctx: Ctx, since: float | None = None, until: float | None = None) -> dict[str, Any]:
    if ctx.kube is None:
        return {"enabled": False, "task_queues": []}
    start, end, _ = time_range(since, until, ctx.settings.default_range_s)
    views = []
    for tq in ctx.kube.task_queues():
        samples = ctx.history.scale_samples(since=start, until=end, namespace=tq.namespace, name=tq.name)
        views.append({**asdict(tq), "events": [asdict(e) for e in ctx.kube.events(tq.namespace, tq.name)],
                      "samples": [asdict(s) for s in samples]})
    return {"enabled": True, "since": start, "until": end, "task_queues": views}


@router.get("/whoami", summary="The caller's name and role (admin may act)")
def whoami(who: Who) -> dict[str, Any]:
    return {"name": who.name, "role": who.role, "via": who.via, "admin": who.is_admin}
