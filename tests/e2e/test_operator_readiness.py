"""The operator's readiness against a real kube-apiserver: ``/readyz`` stays 503 while the operator cannot reach the
API server, turns 200 once kopf watches TaskQueues and the API answers, and goes back to 503 when the API server
has been out of reach for the stale time. (kopf's ``/healthz`` alone stayed 200 in that case, and
``helm install --wait`` passed for an operator that did nothing.)

The operator reaches the API server through a TCP relay the test can cut and restore, as a network partition or a
DNS failure would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.k8s import ControlPlane
from tests.support.operator import OperatorProcess
from tests.support.servers import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

#: The operator's API checks in these tests: every half second, stale after two (the defaults are 10 s and 30 s).
FAST_CHECKS = ("--api-check-interval", "0.5", "--api-stale-after", "2")
READY_TIMEOUT_S = 30.0
#: How long an operator that cannot reach the API is watched to stay unready.
UNREACHABLE_WATCH_S = 6.0
_RELAY_BUFFER = 65536


class Relay:
    """Forwards TCP connections from ``port`` on 127.0.0.1 to ``target_port``; ``cut()`` closes the listener and
    every open connection (new ones are refused), ``restore()`` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [*sockets, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(_RELAY_BUFFER):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def kubeconfig_via(kube: ControlPlane, port: int, path: Path) -> Path:
    """The admin kubeconfig with its server at ``https://127.0.0.1:<port>`` (the serving certificate is for
    127.0.0.1, so TLS still verifies through the relay)."""
    config = yaml.safe_load(kube.kubeconfig.read_text(encoding="utf-8"))
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    path.chmod(0o600)
    return path


def readyz(operator: OperatorProcess) -> tuple[int, str]:
    """The status and body of the operator's ``/readyz`` (0 when it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/readyz", timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
def relay(crd: ControlPlane) -> Iterator[Relay]:
    tool = Relay(crd.port)
    yield tool
    tool.cut()


def started(kube: ControlPlane, kubeconfig: Path) -> OperatorProcess:
    return OperatorProcess(kube, args=("operator", "--all-namespaces", *FAST_CHECKS), kubeconfig=kubeconfig)


def test_an_operator_that_cannot_reach_the_api_server_is_never_ready(
    crd: ControlPlane, relay: Relay, tmp_path: Path
) -> None:
    # Given an operator whose API server address answers nothing (the relay is not listening)
    operator = started(crd, kubeconfig_via(crd, relay.port, tmp_path / "kubeconfig"))
    try:
        wait_for(lambda: readyz(operator)[0] != 0, READY_TIMEOUT_S, interval=0.2,
                 message=f"/readyz never answered:\n{operator.log_text()[-3000:]}")

        # Then /readyz says 503, and why, for as long as we look
        answers = []
        deadline = time.monotonic() + UNREACHABLE_WATCH_S
        while time.monotonic() < deadline:
            answers.append(readyz(operator))
            time.sleep(0.25)
        assert {status for status, _ in answers} == {503}, answers
        assert "the Kubernetes API has not answered" in answers[-1][1]
        assert operator.proc.poll() is None, "an unreachable API server is waited out, not a crash"
    finally:
        operator.stop()


def test_the_operator_is_ready_once_it_watches_and_unready_while_the_api_server_is_out_of_reach(
    crd: ControlPlane, relay: Relay, tmp_path: Path
) -> None:
    # Given an operator that reaches the real API server through the relay
    relay.restore()
    operator = started(crd, kubeconfig_via(crd, relay.port, tmp_path / "kubeconfig"))
    try:
        # Then it becomes ready
        wait_for(lambda: readyz(operator) == (200, "ok"), READY_TIMEOUT_S, interval=0.2,
                 message=f"never ready ({readyz(operator)}):\n{operator.log_text()[-3000:]}")

        # When the API server goes out of reach, it is unready within the stale time and a check
        relay.cut()
        wait_for(lambda: readyz(operator)[0] == 503, 5.0, interval=0.2,
                 message=f"still {readyz(operator)} after the API server went away")
        assert "the Kubernetes API has not answered for" in readyz(operator)[1]

        # And when it is back, ready again
        relay.restore()
        wait_for(lambda: readyz(operator) == (200, "ok"), READY_TIMEOUT_S, interval=0.2,
                 message=f"not ready again ({readyz(operator)}):\n{operator.log_text()[-3000:]}")
    finally:
        operator.stop()
