"""The Flask application factory: ``create_app()`` builds the app, binds the Taskfleet extension and its views.

``flask --app web run`` serves it; ``worker.py`` builds one the same way for ``taskfleet worker -A worker:app``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from web.extensions import taskfleet

#: The embedded SQLite broker: one file in the working directory, also the result backend. TASKFLEET_BROKER_URL and
#: TASKFLEET_RESULT_BACKEND in the environment name another (redis://127.0.0.1:6379/0); `taskfleet worker` reads
#: them itself, and this factory puts them in the Flask config for the web side.
LOCAL_DB = "sqlite:///taskfleet.db"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    flask_app = Flask(__name__)
    flask_app.config.from_mapping(
        GREETING="Hello",
        # The TASKFLEET_* keys configure the extension's App when init_app runs (the same names as the variables).
        TASKFLEET_BROKER_URL=os.environ.get("TASKFLEET_BROKER_URL", LOCAL_DB),
        TASKFLEET_RESULT_BACKEND=os.environ.get("TASKFLEET_RESULT_BACKEND", LOCAL_DB),
        TASKFLEET_INCLUDE=["web.tasks"],  # what a worker imports to know the tasks
    )
    flask_app.config.from_prefixed_env()  # FLASK_GREETING=Bonjour sets GREETING (Flask's own convention)
    if test_config is not None:
        flask_app.config.from_mapping(test_config)

    taskfleet.init_app(flask_app)

    from web import views

    flask_app.register_blueprint(views.bp)
    return flask_app
