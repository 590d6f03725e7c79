"""The extensions, created unbound so any module can import them; ``create_app`` binds them with ``init_app``."""

from __future__ import annotations

from taskfleet.contrib.flask import Taskfleet

#: Its App is named "web" (this package's name) and its tasks "web.<function>". Tasks may be declared with it before
#: init_app is called; each runs inside the context of the Flask app it was bound to.
taskfleet = Taskfleet()
