"""Specification of the worker's probe and metrics endpoints (taskfleet.worker.health), over real HTTP."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskfleet.worker.health import HealthServer, check_health

Probe = Callable[[], tuple[bool, str]]
ServerFactory = Callable[..., HealthServer]


def _fine() -> tuple[bool, str]:
    return True, ""


def _metrics() -> tuple[bytes, str]:
    return b"taskfleet_worker_children 2.0\n", "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """Factory: a started HealthServer on 127.0.0.1 and a free port; stopped after the test."""
    started: list[HealthServer] = []

    def factory(**overrides: Any) -> HealthServer:
        options: dict[str, Any] = {"liveness": _fine, "readiness": _fine, "metrics": _metrics, **overrides}
        server = HealthServer(host="127.0.0.1", port=0, **options)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


def _get(server: HealthServer, path: str) -> tuple[int, str, str]:
    """GET ``path``: (status, body, content type), without following proxy settings from the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
            return response.status, response.read().decode(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), exc.headers["Content-Type"]


def _raise(message: str) -> Probe:
    def probe() -> tuple[bool, str]:
        raise RuntimeError(message)

    return probe


def test_port_zero_binds_a_free_port(serve: ServerFactory) -> None:
    server = serve()

    assert server.port > 0


def test_healthz_answers_ok_while_the_worker_is_alive(serve: ServerFactory) -> None:
    server = serve()

    assert _get(server, "/healthz")[:2] == (200, "ok")


def test_healthz_answers_503_with_the_reason_when_the_worker_is_not_alive(serve: ServerFactory) -> None:
    server = serve(liveness=lambda: (False, "supervisor loop stalled for 45s"))

    assert _get(server, "/healthz")[:2] == (503, "supervisor loop stalled for 45s")


def test_readyz_answers_from_readiness_not_liveness(serve: ServerFactory) -> None:
    server = serve(readiness=lambda: (False, "broker unreachable"))

    assert _get(server, "/readyz")[:2] == (503, "broker unreachable")
    assert _get(server, "/healthz")[:2] == (200, "ok")


def test_metrics_are_served_with_their_own_content_type(serve: ServerFactory) -> None:
    server = serve()

    status, body, content_type = _get(server, "/metrics")

    assert (status, body) == (200, "taskfleet_worker_children 2.0\n")
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"


def test_an_unknown_path_is_404(serve: ServerFactory) -> None:
    server = serve()

    assert _get(server, "/admin")[0] == 404


def test_a_query_string_does_not_change_the_route(serve: ServerFactory) -> None:
    server = serve()

    assert _get(server, "/readyz?verbose=1")[:2] == (200, "ok")


def test_a_probe_that_raises_is_a_503_with_its_masked_error(serve: ServerFactory) -> None:
    server = serve(readiness=_raise("cannot reach redis://:s3cret@redis:6379"))

    status, body, _ = _get(server, "/readyz")

    assert status == 503
    assert body == "RuntimeError: cannot reach redis://:***@redis:6379"


def test_the_server_keeps_serving_after_a_probe_raised(serve: ServerFactory) -> None:
    server = serve(liveness=_raise("boom"))
    _get(server, "/healthz")

    assert _get(server, "/readyz")[:2] == (200, "ok")


def test_metrics_that_raise_are_a_503(serve: ServerFactory) -> None:
    def broken() -> tuple[bytes, str]:
        raise ValueError("duplicate timeseries")

    server = serve(metrics=broken)

    assert _get(server, "/metrics")[:2] == (503, "ValueError: duplicate timeseries")


def test_requests_are_not_logged_to_stderr(serve: ServerFactory, capfd: pytest.CaptureFixture[str]) -> None:
    server = serve()

    _get(server, "/healthz")
    _get(server, "/nowhere")

    assert "GET /" not in capfd.readouterr().err


def test_the_port_is_unknown_before_start() -> None:
    server = HealthServer(host="127.0.0.1", port=0, liveness=_fine, readiness=_fine, metrics=_metrics)

    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port


def test_stop_closes_the_listening_socket(serve: ServerFactory) -> None:
    server = serve()
    port = server.port

    server.stop()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_check_health_reports_ok_and_the_body_of_a_healthy_endpoint(serve: ServerFactory) -> None:
    server = serve()

    assert check_health(f"http://127.0.0.1:{server.port}/healthz") == (True, "ok")


def test_check_health_reports_the_status_and_reason_of_an_unhealthy_endpoint(serve: ServerFactory) -> None:
    server = serve(liveness=lambda: (False, "child pool empty"))

    assert check_health(f"http://127.0.0.1:{server.port}/healthz") == (False, "HTTP 503: child pool empty")


def test_check_health_reports_a_refused_connection_without_raising(serve: ServerFactory) -> None:
    server = serve()
    port = server.port
    server.stop()

    ok, detail = check_health(f"http://127.0.0.1:{port}/healthz")

    assert not ok
    assert "refused" in detail.lower()


def test_check_health_gives_up_after_its_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)

        ok, detail = check_health(f"http://127.0.0.1:{silent.getsockname()[1]}/healthz", timeout_s=0.2)

    assert not ok
    assert "timed out" in detail.lower()


def test_check_health_refuses_a_url_that_is_not_http() -> None:
    ok, detail = check_health("file:///etc/passwd")

    assert not ok
    assert "not an http(s) URL" in detail
