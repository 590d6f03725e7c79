"""Broker and backend URLs: scheme checks and password masking for logs and errors."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from taskfleet.errors import ConfigurationError

_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<password>[^/\s]*)@(?=[^@/\s]*(?:[/?#\s]|$))"
)


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (``redis://:s3cret@h`` -> ``redis://:***@h``)."""
    return mask_secrets(url)


def mask_secrets(text: str) -> str:
    """Mask the password of every URL inside ``text`` (safe to call on any log line or error message)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def url_scheme(url: str) -> str:
    """The scheme of ``url`` in lower case; a URL without one is a ``ConfigurationError``."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ConfigurationError(f"not a URL (no scheme): {mask_url(url)!r}")
    return scheme


def with_db(url: str, db: int) -> str:
    """``redis://h:6379/0`` with its path replaced by ``/db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))
