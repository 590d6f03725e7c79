"""What ``taskfleet worker -A worker:app`` loads: the Flask app built by the factory, as the web process builds it,
and the taskfleet App of its extension. Each task runs in ``flask_app``'s app context."""

from __future__ import annotations

from web import create_app
from web.extensions import taskfleet

flask_app = create_app()
app = taskfleet.app
