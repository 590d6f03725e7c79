"""A one-module Flask app in the ``Taskfleet(flask_app)`` shape, for tests/integration/test_flask.py: a worker loads
it as ``tests.flask_single:taskfleet.app``; the test points ``taskfleet.app`` at its broker and drives the route
with Flask's test client. (The application-factory shape is examples/08-flask.)"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, has_request_context

from taskfleet.contrib.flask import Taskfleet

flask_app = Flask(__name__)
flask_app.config.from_mapping(GREETING="Hello from the worker's Flask app", TASKFLEET_DEFAULT_QUEUE="tests")
taskfleet = Taskfleet(flask_app)


@taskfleet.task
def describe_context(name: str) -> dict[str, Any]:
    """What the task sees of Flask: it fails with "Working outside of application context" unless it runs in one."""
    g.seen = name  # g belongs to the app context
    return {"app": current_app.name, "greeting": f"{current_app.config['GREETING']}, {name}",
            "g": g.seen, "in_request": has_request_context()}


@flask_app.post("/describe/<name>")
def start_describing(name: str) -> tuple[dict[str, Any], int]:
    return {"task_id": describe_context.delay(name).id}, 202
