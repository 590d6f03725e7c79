"""A private RabbitMQ node for integration tests, on free loopback ports, never the system instance.

The node runs the real binaries under ``/usr/lib/rabbitmq/bin`` (the ``/usr/sbin`` wrappers switch to the
``rabbitmq`` user) as the current user, with its config, data, logs and Erlang cookie in a temporary directory and a
unique node name, so it neither sees nor disturbs a packaged ``rabbit@<host>`` node or another test run's node. The
recipe is in /work/shared/BROKERS-TESTING.md. Per-test isolation is a fresh vhost (``new_vhost``) made through the
management HTTP API.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pika  # type: ignore[import-untyped, unused-ignore]

from tests.support.servers import ServerUnavailable, apt_install, can_apt_install, free_port

RABBITMQ_SERVER_BINARY = "/usr/lib/rabbitmq/bin/rabbitmq-server"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
KILL_TIMEOUT_S = 10.0
API_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 2.0
USER = PASSWORD = "guest"
# Ports a private node must not take: epmd, the packaged node's AMQP / management / distribution ports, and the
# fixed range rabbitmqctl's own short-lived Erlang node listens on (rabbitmq-env: CTL_DIST_PORT_MIN 35672, +10).
RESERVED_PORTS = frozenset({4369, 5672, 15672, 25672, *range(35672, 35683)})


class ManagementApiError(RuntimeError):
    """The management HTTP API answered a non-2xx status (``status``), or could not be reached (``status`` None)."""

    def __init__(self, method: str, path: str, status: int | None, detail: str) -> None:
        where = f"HTTP {status}" if status is not None else "unreachable"
        super().__init__(f"RabbitMQ management API {method} {path}: {where}: {detail}")
        self.method = method
        self.path = path
        self.status = status


def find_rabbitmq_server() -> str:
    """Path of the real ``rabbitmq-server`` script, installing Debian's package first when it is missing and we are
    root. The package may start a system node on the default ports; harmless, a private node never talks to it."""
    if os.access(RABBITMQ_SERVER_BINARY, os.X_OK):
        return RABBITMQ_SERVER_BINARY
    if not can_apt_install():
        raise ServerUnavailable(f"{RABBITMQ_SERVER_BINARY} is missing (apt-get install rabbitmq-server)")
    apt_install("rabbitmq-server")
    if not os.access(RABBITMQ_SERVER_BINARY, os.X_OK):
        raise ServerUnavailable(f"{RABBITMQ_SERVER_BINARY} still missing after apt-get install rabbitmq-server")
    return RABBITMQ_SERVER_BINARY


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports, none of them in ``RESERVED_PORTS``."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in RESERVED_PORTS:
            ports.append(port)
    return ports


class RabbitMQServer:
    """A private RabbitMQ node with the management plugin, user ``guest``/``guest`` allowed from loopback.

    ``stop()`` then ``start()`` (or ``kill()`` then ``start()``) restarts the same node — same name, ports and
    data directory — so durable queues and persistent messages survive, which is how tests simulate a broker
    restart (or crash). ``close()`` stops it for good and deletes its directory. Measured here: ``start()`` 5-9 s,
    a graceful ``stop()`` about 6.5 s (the management plugin holds the shutdown for 5 s), ``kill()`` well under 1 s.
    """

    def __init__(self) -> None:
        self.server_binary = find_rabbitmq_server()
        self.ctl_binary = str(Path(self.server_binary).with_name("rabbitmqctl"))
        self.port, self.management_port, self.dist_port = distinct_free_ports(3)
        self.node = f"tf{secrets.token_hex(5)}@localhost"
        self._tmp = tempfile.TemporaryDirectory(prefix="tf-rabbitmq-")
        self.dir = Path(self._tmp.name)
        self._log = self.dir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._vhost_numbers = itertools.count(1)

    @property
    def url(self) -> str:
        """AMQP URL of the default vhost ``/``: ``amqp://guest:guest@127.0.0.1:<port>/%2F``."""
        return self.vhost_url("/")

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API with credentials: ``http://guest:guest@127.0.0.1:<mgmt_port>``."""
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.management_port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive (it may still be booting inside ``start()``)."""
        return self._process is not None and not self._exited()

    @property
    def pid(self) -> int | None:
        """Pid of the ``rabbitmq-server`` shell, which leads the node's process group; None when not started."""
        return self._process.pid if self._process is not None else None

    def processes(self) -> list[int]:
        """Pids of the node's live process tree: the shell, ``beam.smp``, and ``erl_child_setup`` with its port
        programs (``inet_gethost``, the disk monitor's ``sh``), which run in sessions of their own. Empty when the
        node is not running. The shared ``epmd`` daemon is not part of it."""
        if self._process is None or self._exited():
            return []
        return [pid for pid, _ in _process_tree(self._process.pid)]

    def start(self) -> RabbitMQServer:
        """Start the node (no-op when running) and return once the management API answers ``/api/overview`` with
        200 and an AMQP connection to ``url`` opens.

        Raises ServerUnavailable at once, with the tail of the logs, when the process exits while booting, and after
        ``START_TIMEOUT_S`` when it never gets ready. Whatever interrupts the wait (that error, Ctrl-C, a test
        timeout) kills the node first, so a failed start leaves no process behind.
        """
        if self.running:
            return self
        self._reap()
        self._write_config()
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [self.server_binary], env=self._env(), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            self._wait_ready(time.monotonic() + START_TIMEOUT_S)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        """Stop the node gracefully with ``rabbitmqctl -n <node> stop`` and wait until its process tree is gone.

        Falls back to SIGTERM, then SIGKILL, for the shell's process group when rabbitmqctl fails or the node
        lingers past ``STOP_TIMEOUT_S``; port programs left over are SIGKILLed. The node's data stays, so
        ``start()`` brings back the same node. A no-op when not started.
        """
        if self._process is None:
            return
        tree = _process_tree(self._process.pid)
        if not self._exited():
            deadline = time.monotonic() + STOP_TIMEOUT_S
            try:
                stopped = subprocess.run(
                    [self.ctl_binary, "-n", self.node, "stop"], env=self._env(), cwd=self.dir,
                    stdin=subprocess.DEVNULL, capture_output=True, timeout=STOP_TIMEOUT_S, check=False,
                ).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                stopped = False
            if not (stopped and self._wait_exited(deadline - time.monotonic())):
                self._signal_group(signal.SIGTERM)
                if not self._wait_exited(KILL_TIMEOUT_S):
                    self._signal_group(signal.SIGKILL)
        _kill_tree(tree)  # port programs left behind once beam.smp is gone
        self._reap()

    def kill(self) -> None:
        """SIGKILL the node's whole process tree (see ``processes``), as a crash would, and wait until it is gone.

        The data stays: ``start()`` recovers the same node from an unclean shutdown.
        """
        if self._process is None:
            return
        # beam.smp and its helpers first: the shell, still waiting for beam.smp, then reaps it and exits, instead of
        # leaving a beam.smp zombie for init to collect.
        _kill_tree(_process_tree(self._process.pid)[1:])
        self._wait_exited(KILL_TIMEOUT_S)
        self._reap()

    def close(self) -> None:
        """Stop the node and delete its directory (config, data, logs, cookie). The object is done with after."""
        try:
            self.stop()
        finally:
            self._tmp.cleanup()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the management HTTP API as guest and return the decoded JSON reply (None for an empty reply).

        ``path`` starts with ``/api/`` and has its components percent-encoded by the caller (``vhost_path``), e.g.
        ``api("GET", f"/api/queues/{vhost_path(vhost)}/{vhost_path(queue)}")`` gives a queue's
        ``messages_ready`` and ``messages_unacknowledged``. ``body`` is sent as JSON. Raises ManagementApiError on
        a non-2xx status or when the API cannot be reached.
        """
        if not path.startswith("/"):
            raise ValueError(f"management API path must start with '/': {path!r}")
        data = None if body is None else json.dumps(body).encode()
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.management_port}{path}", data=data, method=method,
            headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT_S) as response:
                raw: bytes = response.read()
        except urllib.error.HTTPError as exc:
            raise ManagementApiError(method, path, exc.code, exc.read().decode(errors="replace")[:2000]) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise ManagementApiError(method, path, None, str(exc)) from exc
        return json.loads(raw) if raw.strip() else None

    def new_vhost(self) -> str:
        """Create a fresh, empty vhost with a unique name (``t<n>-<random>``), give guest full permissions on it and
        return its name. Use it with ``vhost_url`` for per-test isolation; ``delete_vhost`` drops it."""
        name = f"t{next(self._vhost_numbers)}-{secrets.token_hex(3)}"
        self.api("PUT", f"/api/vhosts/{vhost_path(name)}", {})
        self.api(
            "PUT", f"/api/permissions/{vhost_path(name)}/{USER}", {"configure": ".*", "write": ".*", "read": ".*"}
        )
        return name

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost with all its queues and exchanges; closes its connections. A missing vhost is not an
        error."""
        try:
            self.api("DELETE", f"/api/vhosts/{vhost_path(name)}")
        except ManagementApiError as exc:
            if exc.status != 404:
                raise

    def vhost_url(self, name: str) -> str:
        """AMQP URL of vhost ``name`` as guest, the name percent-encoded (``/`` becomes ``%2F``)."""
        return f"amqp://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{vhost_path(name)}"

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        """The management API's view of one queue (``messages_ready``, ``messages_unacknowledged``, ``durable``...).

        The message counts are statistics, refreshed every ``collect_statistics_interval`` (500 ms here).
        """
        info: dict[str, Any] = self.api("GET", f"/api/queues/{vhost_path(vhost)}/{vhost_path(name)}")
        return info

    def _write_config(self) -> None:
        (self.dir / "mnesia").mkdir(exist_ok=True)
        (self.dir / "log").mkdir(exist_ok=True)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "loopback_users = none\n"
            # The node logs to log/<node>.log only; its stdout (server.log) keeps the boot banner and crashes.
            "log.console = false\n"
            # Queue statistics in the management API (messages_ready...) lag by up to this interval (default 5 s).
            "collect_statistics_interval = 500\n"
            # Queue counts are read from the newest sample; the default retention buckets make them lag ~5 s.
            "management.sample_retention_policies.global.minute = 1\n"
            "management.sample_retention_policies.basic.minute = 1\n"
            "management.sample_retention_policies.detailed.10 = 1\n"
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        # An empty env file stands in for /etc/rabbitmq/rabbitmq-env.conf, which could set a node name or ports.
        (self.dir / "rabbitmq-env.conf").write_text("")

    def _env(self) -> dict[str, str]:
        """The environment for rabbitmq-server and rabbitmqctl: built from scratch (not inherited), because the
        scripts also honour unprefixed names such as NODENAME or NODE_PORT."""
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "LC_ALL": "C.UTF-8",  # the Elixir CLI warns under a latin1 locale
            "HOME": str(self.dir),  # the Erlang cookie (~/.erlang.cookie) lives here, shared with rabbitmqctl
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),  # no .conf suffix
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),  # absent: none, not /etc's
            # The distribution listener would otherwise bind every interface (AMQP and HTTP are set in the config).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _wait_ready(self, deadline: float) -> None:
        """Poll the management API, then AMQP, until both answer; ServerUnavailable when the process exits first
        or ``deadline`` (monotonic) passes."""
        for ready, what in ((self._management_ready, "management API"), (self._accepts_amqp, "AMQP")):
            while not ready():
                if self._exited():
                    raise ServerUnavailable(f"rabbitmq-server {self.node} exited while starting: {self.log_tail()}")
                if time.monotonic() >= deadline:
                    raise ServerUnavailable(
                        f"rabbitmq-server {self.node}: {what} not ready in {START_TIMEOUT_S}s: {self.log_tail()}"
                    )
                time.sleep(0.1)

    def _management_ready(self) -> bool:
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.management_port}/api/overview", headers={"Authorization": f"Basic {credentials}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
                return bool(response.status == 200)
        except (OSError, http.client.HTTPException, ValueError):
            return False

    def _accepts_amqp(self) -> bool:
        parameters = pika.URLParameters(self.url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = PROBE_TIMEOUT_S
        parameters.stack_timeout = PROBE_TIMEOUT_S
        try:
            connection = pika.BlockingConnection(parameters)
        except Exception:  # not only AMQPError: a handshake timeout escapes as AMQPConnectorStackTimeout
            return False
        connection.close()
        return True

    def _exited(self) -> bool:
        """True once the server's shell has exited. It is left unreaped (a zombie), so its pid keeps naming the
        process group and ``_signal_group`` cannot hit a stranger that reused the pid."""
        process = self._process
        if process is None or process.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _wait_exited(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signum)

    def _reap(self) -> None:
        """SIGKILL whatever is left in the shell's process group, then reap the shell."""
        if self._process is None:
            return
        self._signal_group(signal.SIGKILL)
        self._process.wait(KILL_TIMEOUT_S)
        self._process = None

    def log_tail(self) -> str:
        """The last lines of the node's stdout and of its log file, for a failure message."""
        parts = []
        for path in (self._log, self.dir / "log" / f"{self.node}.log"):
            try:
                parts.append(f"--- {path.name}:\n{path.read_text(errors='replace')[-2000:]}")
            except OSError:
                parts.append(f"--- {path.name}: (none)")
        return "\n".join(parts)

    def __enter__(self) -> RabbitMQServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a process from /proc, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of ``root`` and its live descendants, found by parent pid whatever their session."""
    children: dict[int, list[tuple[int, int]]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) and stat[0] not in "ZX":
                children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
    root_stat = _proc_stat(root)
    if root_stat is None or root_stat[0] in "ZX":
        return []
    tree, todo = [], [(root, root_stat[2])]
    while todo:
        node = todo.pop()
        tree.append(node)
        todo.extend(children.get(node[0], []))
    return tree


def _alive(pid: int, start: int) -> bool:
    """True while ``pid`` is still the process that started at ``start`` and is not a zombie."""
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == start and stat[0] not in "ZX"


def _kill_tree(tree: list[tuple[int, int]]) -> None:
    """SIGKILL the processes of a ``_process_tree`` snapshot that are still alive and wait (up to
    ``KILL_TIMEOUT_S``) until they are gone or zombies."""
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while alive := [pid for pid, start in tree if _alive(pid, start)]:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"processes {alive} survived SIGKILL for {KILL_TIMEOUT_S}s")
        time.sleep(0.05)


def vhost_path(name: str) -> str:
    """``name`` percent-encoded as one URL path component (vhost ``/`` is ``%2F``)."""
    return urllib.parse.quote(name, safe="")
