"""Result backends behind one interface; ``connect`` picks one by URL scheme."""

from __future__ import annotations

from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.errors import ConfigurationError
from taskfleet.settings import BackendSettings
from taskfleet.urls import mask_url, url_scheme

__all__ = ["ResultBackend", "ResultRecord", "connect"]


def connect(settings: BackendSettings) -> ResultBackend:
    """A new result-backend client for ``settings.url`` (``redis://``, ``rediss://``, ``sqlite:///path``,
    ``memory://``)."""
    scheme = url_scheme(settings.url)
    if scheme in ("redis", "rediss", "unix"):
        from taskfleet.backends.redis import RedisBackend

        return RedisBackend(settings)
    if scheme == "sqlite":
        from taskfleet.backends.sqlite import SQLiteBackend

        return SQLiteBackend(settings)
    if scheme == "memory":
        from taskfleet.backends.memory import MemoryBackend

        return MemoryBackend(settings)
    raise ConfigurationError(
        f"unsupported result backend URL {mask_url(settings.url)!r}: use redis://, sqlite:///path or memory://"
    )
