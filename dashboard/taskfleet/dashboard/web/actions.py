"""Actions, admin role only: revoke / terminate, rate limit, requeue dead letters, purge, pool grow / shrink.

Each is a POST under ``/api/actions/`` taking JSON (programs: answered with JSON) or an HTML form (browsers without
JavaScript: answered with a redirect back to the page, ``?done=`` saying what happened). Every POST passes the
same-origin check (``auth.Authenticator.check_same_origin``) and the admin check before anything is done.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from taskfleet.dashboard.web.deps import Ctx, admin

router = APIRouter(prefix="/api/actions", tags=["actions"], dependencies=[Depends(admin)])
_FORM = "application/x-www-form-urlencoded"


async def body(request: Request) -> dict[str, str]:
    """The request's fields, from JSON or a urlencoded form (one value per field; blanks dropped)."""
    raw = await request.body()
    if request.headers.get("content-type", "").startswith(_FORM):
        return {k: v[0].strip() for k, v in parse_qs(raw.decode()).items() if v and v[0].strip()}
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise HTTPException(422, "the body is neither JSON nor a form") from exc
    if not isinstance(data, dict):
        raise HTTPException(422, "the body is a JSON object")
    return {k: str(v).strip() if not isinstance(v, bool) else ("1" if v else "") for k, v in data.items()
            if v is not None and str(v).strip()}


def required(fields: dict[str, str], name: str) -> str:
    if name not in fields:
        raise HTTPException(422, f"missing field {name!r}")
    return fields[name]


def answer(request: Request, fields: dict[str, str], result: dict[str, Any], done: str) -> Response:
    """JSON for a program; for a form, a redirect to ``next`` (a path inside the dashboard) with ``done``."""
    if not request.headers.get("content-type", "").startswith(_FORM):
        return JSONResponse(result)
    target = fields.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:  # a browser reads /\x as //x
        target = "/"
    root = request.scope.get("root_path", "")
    sep = "&" if "?" in target else "?"
    return RedirectResponse(f"{root}{target}{sep}{urlencode({'done': done})}", status_code=303)


def _flag(fields: dict[str, str], name: str) -> bool:
    return fields.get(name, "").lower() in ("1", "true", "on", "yes")


def _count(fields: dict[str, str]) -> int:
    try:
        n = int(fields.get("n", "1"))
    except ValueError as exc:
        raise HTTPException(422, "n is a whole number") from exc
    if not 1 <= n <= 64:
        raise HTTPException(422, "n is between 1 and 64")
    return n


@router.post("/revoke", summary="Revoke a task (`terminate`: also kill its running child)")
async def revoke(request: Request, ctx: Ctx) -> Response:
    fields = await body(request)
    task_id, terminate = required(fields, "task_id"), _flag(fields, "terminate")
    result = await run_in_threadpool(ctx.fleet.revoke, task_id, terminate=terminate)
    return answer(request, fields, result, f"{'terminated' if terminate else 'revoked'} {task_id}")


@router.post("/rate-limit", summary="Set a task's rate limit on the workers (`10/s`, `100/m`; empty: none)")
async def rate_limit(request: Request, ctx: Ctx) -> Response:
    fields = await body(request)
    name = required(fields, "task_name")
    rate = fields.get("rate_limit")
    result = await run_in_threadpool(ctx.fleet.rate_limit, name, rate, fields.get("worker"))
    return answer(request, fields, result, f"rate limit of {name}: {rate or 'none'}")


@router.post("/requeue", summary="Requeue a queue's dead letters (all, or `message_id`)")
async def requeue(request: Request, ctx: Ctx) -> Response:
    fields = await body(request)
    queue = required(fields, "queue")
    ids = [fields["message_id"]] if "message_id" in fields else None
    result = await run_in_threadpool(ctx.fleet.requeue, queue, ids)
    return answer(request, fields, result, f"requeued {result['requeued']} from {queue}")


@router.post("/purge", summary="Delete a queue's ready and delayed messages (needs `confirm` = the queue's name)")
async def purge(request: Request, ctx: Ctx) -> Response:
    fields = await body(request)
    queue = required(fields, "queue")
    if fields.get("confirm") != queue:
        raise HTTPException(422, "purge needs confirm set to the queue's name")
    result = await run_in_threadpool(ctx.fleet.purge, queue)
    return answer(request, fields, result, f"purged {result['purged']} from {queue}")


@router.post("/pool-grow", summary="Add `n` children to the workers' pools (all, or `worker`)")
async def pool_grow(request: Request, ctx: Ctx) -> Response:
    fields = await body(request)
    n = _count(fields)
    result = await run_in_threadpool(ctx.fleet.pool, grow=True, n=n, worker=fields.get("worker"))
    return answer(request, fields, result, f"pool grown by {n}")


@router.post("/pool-shrink", summary="Remove `n` children from the workers' pools (all, or `worker`)")
async def pool_shrink(request: Request, ctx: Ctx) -> Response:
    fields = await body(request)
    n = _count(fields)
    result = await run_in_threadpool(ctx.fleet.pool, grow=False, n=n, worker=fields.get("worker"))
    return answer(request, fields, result, f"pool shrunk by {n}")
