"""Result backends behind one interface (``base.ResultBackend``): ``redis``, ``sqlite`` and ``stub``
(``memory://``); ``connect`` picks one by URL scheme, from the table in ``taskfleet._connections.schemes``."""

from __future__ import annotations

from taskfleet._connections import schemes
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.settings import BackendSettings

__all__ = ["ResultBackend", "ResultRecord", "connect"]


def connect(settings: BackendSettings) -> ResultBackend:
    """A new result-backend client for ``settings.url`` (``redis://``, ``rediss://``, ``unix://``,
    ``sqlite:///path``, ``memory://``); any other scheme is a ``ConfigurationError``."""
    return schemes.connect_backend(settings)
