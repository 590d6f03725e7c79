"""Private broker servers for integration tests: started on free loopback ports, never the system instances.

A missing ``redis-server`` binary is installed from Debian's packages when we are root (``apt_install``, which
``rabbitmq_server.py`` uses too). When a server cannot be had, ``require_server`` skips the test on a laptop and fails
it in CI (``CI=true``), where skipping would hide it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Protocol, TypeVar

import pytest

REDIS_BINARY = "redis-server"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
APT_TIMEOUT_S = 600.0


class ServerUnavailable(RuntimeError):
    """The server binary is missing and could not be installed, or the server did not start."""


def require_server(reason: str) -> NoReturn:
    """Skip the calling test (or fixture) because its server is unavailable; fail instead when ``CI`` is true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"integration server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"integration server unavailable: {reason}")


class Server(Protocol):
    """What ``serve`` needs of a private server class (RedisServer, RabbitMQServer)."""

    def start(self) -> Server: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=Server)


def serve(make: Callable[[], S]) -> Iterator[S]:
    """Body of a server fixture (``yield from serve(RedisServer)``): make and start the server, hand it out, close
    it afterwards. A server that cannot be had goes through ``require_server`` (skip locally, fail in CI)."""
    try:
        server = make()
        server.start()
    except ServerUnavailable as exc:
        require_server(str(exc))
    try:
        yield server
    finally:
        server.close()


#: Where ``free_port`` looks when the system's ephemeral range cannot be read.
_EPHEMERAL_DEFAULT = (32768, 60999)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _EPHEMERAL_DEFAULT


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, chosen below the system's ephemeral range.

    A port the kernel hands out (``bind(0)``) is an ephemeral one: while a server restarts on it (the broker-restart
    and fault-matrix tests), any client connection made meanwhile may take it as its local port, and the server can
    no longer listen there. Ports below the ephemeral range are never given to outgoing connections."""
    low, _high = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ServerUnavailable(f"no free TCP port found below the ephemeral range (from {low})")


def find_redis_server() -> str:
    """Path of ``redis-server``, installing Debian's package first when it is missing and we are root."""
    found = shutil.which(REDIS_BINARY) or _existing("/usr/bin/redis-server", "/usr/local/bin/redis-server")
    if found:
        return found
    if not can_apt_install():
        raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
    # The package may start a system instance on 6379; harmless, we never talk to it.
    apt_install("redis-server")
    found = shutil.which(REDIS_BINARY) or _existing("/usr/bin/redis-server")
    if not found:
        raise ServerUnavailable("redis-server still missing after apt-get install redis-server")
    return found


def can_apt_install() -> bool:
    """True when we are root and ``apt-get`` is on PATH, so a missing server package can be installed."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(*packages: str) -> None:
    """Run ``apt-get update`` then ``apt-get install -y PACKAGES`` non-interactively.

    Raises ServerUnavailable with the tail of apt's stderr when either command fails or times out. The caller
    checks ``can_apt_install()`` first; this does not.
    """
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        try:
            result = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerUnavailable(f"{' '.join(command)} failed: {exc}") from exc
        if result.returncode != 0:
            raise ServerUnavailable(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")


def _existing(*paths: str) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None)


class RedisServer:
    """A private ``redis-server``, without persistence unless ``durable``. ``stop()`` then ``start()`` restarts it
    on the same port (with an empty dataset unless durable), which is how tests simulate a broker restart."""

    def __init__(self, port: int | None = None, *, durable: bool = False,
                 bind: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.binary = find_redis_server()
        #: Addresses it listens on (the realnode tier adds the pod gateway); ``url`` and tests use the first.
        self.bind = bind
        #: ``durable``: append-only file fsynced on every write, so a restart (even after SIGKILL) keeps the data.
        self.durable = durable
        self.port = port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="tf-redis-")
        self.dir = Path(self._tmp.name)
        self._log = self.dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (no db path)."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start the server (no-op when running) and return once it answers PING."""
        if self.running:
            return self
        command = [
            self.binary, "--bind", " ".join(self.bind), "--port", str(self.port), "--save", "",
            "--appendonly", "yes" if self.durable else "no", "--appendfsync", "always",
            "--dir", str(self.dir), "--daemonize", "no",
            # Protected mode would refuse clients from the extra addresses (no password is set).
            *(["--protected-mode", "no"] if self.bind != ("127.0.0.1",) else []),
        ]
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers_ping():
            if self._process.poll() is not None:
                raise ServerUnavailable(f"redis-server exited with {self._process.returncode}: {self._log_tail()}")
            if time.monotonic() >= deadline:
                self.kill()
                raise ServerUnavailable(f"redis-server did not answer PING in {START_TIMEOUT_S}s: {self._log_tail()}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers) and wait for it to exit."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(STOP_TIMEOUT_S)
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(STOP_TIMEOUT_S)
            self._process = None

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        self._tmp.cleanup()

    def command(self, *args: str) -> bytes:
        """Send one command and return its raw first reply line (enough for PING, FLUSHALL, CONFIG SET)."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.create_connection((self.bind[0], self.port), timeout=2.0) as sock:
            sock.sendall(payload)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.rstrip(b"\r\n")

    def flushall(self) -> None:
        """Delete every key in every database."""
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")

    def _answers_ping(self) -> bool:
        try:
            return self.command("PING") == b"+PONG"
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
