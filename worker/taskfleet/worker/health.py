"""The worker's HTTP endpoints for Kubernetes probes and Prometheus, and the client used by ``--check``.

``GET /healthz`` (liveness), ``GET /readyz`` (readiness) and ``GET /metrics`` are served by a
``ThreadingHTTPServer`` on a daemon thread of the supervisor. A probe callable that raises yields a 503
with its (masked) error text; it never takes the server down.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from taskfleet.urls import mask_secrets
from taskfleet.worker.health_socket import port_unavailable
from taskfleet.worker.logging import Logger, get_logger

__all__ = ["DEFAULT_CHECK_TIMEOUT_S", "HealthServer", "check_health"]

DEFAULT_CHECK_TIMEOUT_S = 2.0
"""How long ``check_health`` waits for an answer, in seconds (well inside a probe's ``timeoutSeconds``)."""

_REQUEST_TIMEOUT_S = 10.0  # a client that connects and never sends must not pin a thread forever
_POLL_INTERVAL_S = 0.1  # how often the serving loop checks for shutdown, i.e. how long stop() may wait
_MAX_DETAIL_BYTES = 4096
_TEXT = "text/plain; charset=utf-8"

Probe = Callable[[], tuple[bool, str]]
MetricsSource = Callable[[], tuple[bytes, str]]

_log = get_logger(__name__)


class _Server(ThreadingHTTPServer):
    """Listens on IPv6 when the host is an IPv6 address, and logs handler errors instead of printing them."""

    daemon_threads = True

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler],
                 listening: socket.socket | None = None) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), handler, bind_and_activate=listening is None)
        if listening is not None:  # already bound and listening (taskfleet.worker.health_socket)
            self.socket.close()
            self.socket = listening
            self.server_address = listening.getsockname()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed request (e.g. the client hung up) is worth a debug line, not a traceback on stderr."""
        _log.debug("health_request_failed", client=str(client_address), exc_info=True)


def _handler_class(liveness: Probe, readiness: Probe, metrics: MetricsSource) -> type[BaseHTTPRequestHandler]:
    probes = {"/healthz": liveness, "/readyz": readiness}

    class _Handler(BaseHTTPRequestHandler):
        timeout = _REQUEST_TIMEOUT_S
        server_version = "taskfleet-worker"

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                self._serve_metrics()
            elif path in probes:
                self._serve_probe(path, probes[path])
            else:
                self._send(404, b"not found\n", _TEXT)

        def _serve_probe(self, path: str, probe: Probe) -> None:
            try:
                ok, reason = probe()
            except Exception as exc:  # noqa: BLE001 - a broken probe is an unhealthy answer, not a dead server
                ok, reason = False, f"{type(exc).__name__}: {exc}"
                _log.warning("health_probe_raised", path=path, error=reason)
            body = "ok" if ok else mask_secrets(reason or "unhealthy")
            self._send(200 if ok else 503, body.encode("utf-8"), _TEXT)

        def _serve_metrics(self) -> None:
            try:
                body, content_type = metrics()
            except Exception as exc:  # noqa: BLE001 - same as a broken probe
                text = mask_secrets(f"{type(exc).__name__}: {exc}")
                _log.warning("health_probe_raised", path="/metrics", error=text)
                self._send(503, text.encode("utf-8"), _TEXT)
                return
            self._send(200, body, content_type)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            _log.debug("health_request", client=self.address_string(), line=mask_secrets(format % args))

    return _Handler


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` on a daemon thread.

    Args:
        host: the address to listen on, e.g. ``"0.0.0.0"``, ``"::"`` or ``"127.0.0.1"``.
        port: the TCP port; ``0`` picks a free one (read it back from ``port``).
        liveness: returns ``(alive, reason)``; ``GET /healthz`` answers 200 ``ok`` or 503 ``reason``.
        readiness: the same for ``GET /readyz``.
        metrics: returns ``(body, content_type)`` for ``GET /metrics``, e.g. ``WorkerMetrics.render``.
        listening: a socket already bound and listening (``host`` and ``port`` then only name it), e.g. from
            ``taskfleet.worker.health_socket.bind_health_socket``; ``stop`` closes it.

    The callables run on the server's request threads, so they must be thread-safe and quick.
    """

    def __init__(
        self, *, host: str, port: int, liveness: Probe, readiness: Probe, metrics: MetricsSource,
        listening: socket.socket | None = None,
    ) -> None:
        self._host = host
        self._listening = listening
        self._requested_port = port
        self._handler = _handler_class(liveness, readiness, metrics)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (the one picked when ``port=0`` was asked for).

        Raises:
            RuntimeError: the server is not started.
        """
        if self._server is None:
            raise RuntimeError("the health server is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind the port and serve on a daemon thread; returns once the port is bound.

        Raises:
            RuntimeError: the server is already started.
            OSError: the port cannot be bound (e.g. already in use).
        """
        if self._server is not None:
            raise RuntimeError("the health server is already started")
        server = _Server(self._host, self._requested_port, self._handler, self._listening)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name="taskfleet-health",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        _log.info("health_server_started", host=self._host, port=self.port)

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the serving thread; a no-op when not started."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None
        _log.info("health_server_stopped")


def check_health(url: str, timeout_s: float = DEFAULT_CHECK_TIMEOUT_S) -> tuple[bool, str]:
    """GET ``url`` and report ``(ok, detail)``; used by ``taskfleet worker --check`` in exec probes.

    ``ok`` is true for a 2xx answer; ``detail`` is the response body, or why the check failed (HTTP status,
    refused connection, timeout), with passwords masked. Never raises. Proxy environment variables are
    ignored: the worker is checked from inside its own pod. ``timeout_s`` is in seconds (default 2).
    """
    if urlsplit(url).scheme not in ("http", "https"):
        return False, f"not an http(s) URL: {mask_secrets(url)}"
    import urllib.error  # deferred: only the --check probe is an HTTP client, never a serving worker
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = int(response.status)
            detail = _read_detail(response)
    except urllib.error.HTTPError as exc:
        detail = _read_detail(exc)
        exc.close()
        return False, f"HTTP {exc.code}: {detail}"
    except urllib.error.URLError as exc:
        return False, mask_secrets(f"cannot reach {url}: {exc.reason}")
    except (OSError, ValueError) as exc:  # timeouts while reading, malformed URLs
        return False, mask_secrets(f"cannot reach {url}: {type(exc).__name__}: {exc}")
    return 200 <= status < 300, detail if 200 <= status < 300 else f"HTTP {status}: {detail}"


def _read_detail(response: Any) -> str:
    """The start of a response body as masked text; empty when it cannot be read."""
    try:
        body = response.read(_MAX_DETAIL_BYTES)
    except (OSError, ValueError):
        return ""
    return mask_secrets(bytes(body).decode("utf-8", "replace").strip())


def start_health_server(*, host: str, port: int, required: bool, liveness: Probe, readiness: Probe,
                        metrics: MetricsSource, log: Logger) -> HealthServer | None:
    """A started ``HealthServer`` for a CLI entrypoint, or None when ``port`` cannot be bound and was not
    ``required`` (the container default: a warning is logged and the process runs without health checks, so a
    second worker or beat on the machine never fails to start).

    Raises:
        ConfigurationError: a ``required`` port (asked for with ``--health-port`` or ``TASKFLEET_HEALTH_PORT``)
            cannot be bound, e.g. it is in use (the caller logs it and exits with ``ExitCode.BAD_CONFIG``).
    """
    health = HealthServer(host=host, port=port, liveness=liveness, readiness=readiness, metrics=metrics)
    try:
        health.start()
    except OSError as exc:
        port_unavailable(exc, host=host, port=port, required=required, log=log)
        return None
    return health
