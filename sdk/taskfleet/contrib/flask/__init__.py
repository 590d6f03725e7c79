"""Flask integration (``pip install 'taskfleet[flask]'``): the ``Taskfleet`` extension runs every task inside its
Flask app context and configures its ``App`` from the Flask config's ``TASKFLEET_*`` keys. See docs/flask.md.

    from flask import Flask
    from taskfleet.contrib.flask import Taskfleet

    taskfleet = Taskfleet()                     # or Taskfleet(flask_app)

    @taskfleet.task
    def greet(name: str) -> str: ...

    def create_app() -> Flask:
        flask_app = Flask(__name__)
        flask_app.config["TASKFLEET_BROKER_URL"] = "redis://127.0.0.1:6379/0"
        taskfleet.init_app(flask_app)
        return flask_app
"""

from __future__ import annotations

from taskfleet.contrib.flask.extension import CONFIG_NAMESPACE, EXTENSION_KEY, FlaskTask, Taskfleet, extension_of

__all__ = ["CONFIG_NAMESPACE", "EXTENSION_KEY", "FlaskTask", "Taskfleet", "extension_of"]
