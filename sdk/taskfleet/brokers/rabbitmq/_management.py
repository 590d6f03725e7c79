"""A small client of RabbitMQ's management HTTP API: per-queue ready and unacked counts, and queue names.

The API's counters are refreshed by the server every ``collect_statistics_interval`` (5 s by default), so counts
read here may lag by that much.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from taskfleet.errors import BrokerConnectionError, BrokerError, ConfigurationError
from taskfleet.urls import mask_secrets, mask_url


@dataclass(frozen=True, slots=True)
class QueueCounts:
    ready: int
    unacked: int


class ManagementApi:
    """The management API at ``url`` (``http(s)://[user:pass@]host:port[/prefix]``) for one vhost. Credentials
    missing from ``url`` are taken from ``fallback_user``/``fallback_password`` (the AMQP URL's)."""

    def __init__(self, url: str, *, vhost: str, fallback_user: str, fallback_password: str,
                 timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"invalid management URL {mask_url(url)!r}: want http(s)://host:port")
        user = unquote(parts.username) if parts.username else fallback_user
        password = unquote(parts.password) if parts.password else fallback_password
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self._base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._vhost = quote(vhost, safe="")
        self._timeout_s = timeout_s
        self.masked_url = mask_url(url)

    def queue_counts(self, queue: str) -> QueueCounts | None:
        """Ready and unacked counts of ``queue``, or None when it does not exist."""
        body = self._get(f"/api/queues/{self._vhost}/{quote(queue, safe='')}")
        if body is None:
            return None
        return QueueCounts(ready=int(body.get("messages_ready") or 0),
                           unacked=int(body.get("messages_unacknowledged") or 0))

    def queue_names(self) -> list[str]:
        """Names of every queue in the vhost."""
        body = self._get(f"/api/queues/{self._vhost}?columns=name")
        return [str(item["name"]) for item in body or []]

    def _get(self, path: str) -> Any:
        # deferred: urllib.request brings http.client and email (~1.7 MiB in each worker process), and only the
        # management API calls (queue counts and names) use it
        from urllib.request import Request, urlopen

        request = Request(self._base + path, headers={"Authorization": self._auth, "Accept": "application/json"})
        try:
            with urlopen(request, timeout=self._timeout_s) as response:
                return json.loads(response.read())
        except HTTPError as exc:
            if exc.code == 404:
                return None
            raise BrokerError(
                f"rabbitmq management API {self.masked_url} answered {exc.code} for {path.split('?')[0]}"
                + (": check its credentials" if exc.code in (401, 403) else "")
            ) from exc
        except (URLError, OSError, ValueError) as exc:
            raise BrokerConnectionError(
                f"rabbitmq management API {self.masked_url} unreachable: {mask_secrets(str(exc))}"
            ) from exc
