"""The views: one route sends a task, another reports on it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from web.extensions import taskfleet
from web.tasks import greet

bp = Blueprint("tasks", __name__)


@bp.post("/greet/<name>")
def start_greeting(name: str) -> tuple[dict[str, Any], int]:
    result = greet.delay(name)  # returns once the broker has stored the message
    return {"task_id": result.id}, 202


@bp.get("/tasks/<task_id>")
def task_status(task_id: str) -> dict[str, Any]:
    result = taskfleet.app.AsyncResult(task_id)
    if not result.ready():
        return {"task_id": task_id, "state": str(result.state)}
    outcome = result.result if result.successful() else repr(result.result)
    return {"task_id": task_id, "state": str(result.state), "result": outcome}
