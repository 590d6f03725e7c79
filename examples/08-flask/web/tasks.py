"""The tasks. Each runs inside the Flask app context, so it reads the app's config through ``current_app``."""

from __future__ import annotations

from flask import current_app

from web.extensions import taskfleet


@taskfleet.task
def greet(name: str) -> str:
    return f"{current_app.config['GREETING']}, {name}! (from the Flask app {current_app.name})"
