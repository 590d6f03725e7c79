"""The private RabbitMQ node fixture itself: it starts on its own loopback ports, hands out usable isolated vhosts,
survives a stop/start (and a kill/start) with its durable data, fails fast when it cannot boot, and leaves no process
behind."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pika  # type: ignore[import-untyped, unused-ignore]
import pika.exceptions  # type: ignore[import-untyped, unused-ignore]
import pytest

from tests.support.rabbitmq_server import START_TIMEOUT_S, ManagementApiError, RabbitMQServer
from tests.support.servers import ServerUnavailable, require_server, serve

pytestmark = pytest.mark.integration

QUEUE = "fixture-q"


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQServer]:
    """One private node for this module (skipped on a laptop without RabbitMQ, failed in CI)."""
    yield from serve(RabbitMQServer)


@pytest.fixture
def vhost(rabbitmq: RabbitMQServer) -> Iterator[str]:
    """A fresh vhost on the module's node, deleted afterwards."""
    rabbitmq.start()  # no-op unless a failed restart test left it stopped
    name = rabbitmq.new_vhost()
    yield name
    if rabbitmq.running:
        rabbitmq.delete_vhost(name)


def publish(url: str, *bodies: tuple[bytes, bool]) -> None:
    """Declare the durable ``QUEUE`` and publish ``(body, persistent)`` messages to it, each confirmed by the broker."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(QUEUE, durable=True)
        channel.confirm_delivery()
        for body, persistent in bodies:
            mode = pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient
            channel.basic_publish("", QUEUE, body, pika.BasicProperties(delivery_mode=mode), mandatory=True)
    finally:
        connection.close()


def drain(url: str, *, server: RabbitMQServer | None = None,
          recovery_timeout_s: float = 60.0) -> list[tuple[bytes, int]]:
    """Get and ack every message in ``QUEUE``: ``(body, delivery_mode)`` in queue order.

    After an unclean shutdown the node may accept connections before its vhost has recovered its queues (the vhost
    supervisor recovers asynchronously, and restarts a vhost whose message store needed repair, which takes longer on
    a loaded machine), so a 404 for the queue is retried until ``recovery_timeout_s``; then the failure carries the
    node's log (``server``)."""
    deadline = time.monotonic() + recovery_timeout_s
    while True:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        got: list[tuple[bytes, int]] = []
        try:
            channel = connection.channel()
            while True:
                method, properties, body = channel.basic_get(QUEUE)
                if method is None:
                    return got
                got.append((body, properties.delivery_mode))
                channel.basic_ack(method.delivery_tag)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404 or got:
                raise
            if time.monotonic() > deadline:
                log = server.log_tail() if server is not None else "(no server given)"
                raise AssertionError(f"{QUEUE} not recovered in {recovery_timeout_s}s: {exc}\n{log}") from exc
        finally:
            if connection.is_open:
                connection.close()
        time.sleep(0.5)


def proc_stat(pid: int) -> tuple[bytes, int] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[19])


def snapshot(pids: list[int]) -> dict[int, int]:
    """pid -> start time, to tell a process from a later one that reuses its pid."""
    return {pid: stat[1] for pid in pids if (stat := proc_stat(pid)) is not None}


def still_alive(processes: dict[int, int]) -> list[int]:
    """The pids of a ``snapshot`` that still run: the same process, and not a zombie."""
    return [
        pid for pid, start in processes.items()
        if (stat := proc_stat(pid)) is not None and stat[1] == start and stat[0] not in (b"Z", b"X")
    ]


def command_names(pids: list[int]) -> set[str]:
    """The command names (``/proc/<pid>/comm``) of the pids that still exist."""
    names = set()
    for pid in pids:
        try:
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(IPv4 address, port) of every TCP socket process ``pid`` listens on (from /proc/net/tcp; an IPv6 listener
    shows up as ``"ipv6"``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            host = socket.inet_ntoa(bytes.fromhex(address)[::-1]) if table == "tcp" else "ipv6"
            found.add((host, int(port, 16)))
    return found


def port_accepts(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_node_runs_privately_on_its_own_ports(rabbitmq: RabbitMQServer) -> None:
    overview = rabbitmq.api("GET", "/api/overview")

    assert rabbitmq.running
    assert overview["node"] == rabbitmq.node
    assert re.fullmatch(r"tf[0-9a-f]+@localhost", rabbitmq.node)
    # (The API reports "::" for the HTTP listener's address whatever it binds; the sockets tell the truth.)
    listeners = {(listener["protocol"], listener["port"]) for listener in overview["listeners"]}
    ports = {"amqp": rabbitmq.port, "http": rabbitmq.management_port, "clustering": rabbitmq.dist_port}
    assert listeners == set(ports.items())
    beam = [pid for pid in rabbitmq.processes() if command_names([pid]) == {"beam.smp"}]
    assert len(beam) == 1
    assert listening_addresses(beam[0]) == {("127.0.0.1", port) for port in ports.values()}
    assert len({rabbitmq.port, rabbitmq.management_port, rabbitmq.dist_port, 5672, 15672, 25672}) == 6
    assert rabbitmq.url == f"amqp://guest:guest@127.0.0.1:{rabbitmq.port}/%2F"
    assert rabbitmq.management_url == f"http://guest:guest@127.0.0.1:{rabbitmq.management_port}"


def test_new_vhost_is_usable_with_pika_and_isolated(rabbitmq: RabbitMQServer, vhost: str) -> None:
    other = rabbitmq.new_vhost()

    publish(rabbitmq.vhost_url(vhost), (b"hello", True))

    assert other != vhost
    assert rabbitmq.vhost_url(vhost) == f"amqp://guest:guest@127.0.0.1:{rabbitmq.port}/{vhost}"
    queue = rabbitmq.queue(vhost, QUEUE)
    assert queue["durable"] is True
    assert queue["vhost"] == vhost
    with pytest.raises(ManagementApiError) as missing:
        rabbitmq.queue(other, QUEUE)
    assert missing.value.status == 404
    assert drain(rabbitmq.vhost_url(vhost), server=rabbitmq) == [(b"hello", 2)]

    rabbitmq.delete_vhost(other)
    rabbitmq.delete_vhost(other)  # already gone: not an error
    assert other not in {v["name"] for v in rabbitmq.api("GET", "/api/vhosts")}
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(rabbitmq.vhost_url(other)))


def test_stop_then_start_is_a_restart_that_keeps_durable_data(rabbitmq: RabbitMQServer, vhost: str) -> None:
    url = rabbitmq.vhost_url(vhost)
    publish(url, (b"kept", True), (b"transient", False))
    before = (rabbitmq.node, rabbitmq.port, rabbitmq.management_port, rabbitmq.dist_port)
    old_processes = snapshot(rabbitmq.processes())

    rabbitmq.stop()

    assert not rabbitmq.running
    assert rabbitmq.processes() == []
    assert still_alive(old_processes) == []
    assert not port_accepts(rabbitmq.port)

    rabbitmq.start()

    assert (rabbitmq.node, rabbitmq.port, rabbitmq.management_port, rabbitmq.dist_port) == before
    assert vhost in {v["name"] for v in rabbitmq.api("GET", "/api/vhosts")}
    # The persistent message came back from disk; the transient one died with the old node.
    assert drain(url, server=rabbitmq) == [(b"kept", 2)]


def test_kill_and_close_leave_no_process_behind() -> None:
    try:
        server = RabbitMQServer().start()
    except ServerUnavailable as exc:
        require_server(str(exc))
    try:
        publish(server.url, (b"confirmed before the crash", True))
        crashed = snapshot(server.processes())
        assert "beam.smp" in command_names(list(crashed))

        server.kill()

        assert not server.running
        assert still_alive(crashed) == []

        server.start()  # recovers the same node after the unclean shutdown
        assert drain(server.url, server=server) == [(b"confirmed before the crash", 2)]
        running = snapshot(server.processes())
        pgid = server.pid
        assert pgid is not None
    finally:
        server.close()

    assert not server.running
    assert still_alive(running) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert not server.dir.exists()


def test_start_fails_at_once_with_the_log_when_the_node_dies_booting() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        try:
            server = RabbitMQServer()
        except ServerUnavailable as exc:
            require_server(str(exc))
        server.dist_port = taken  # the node halts early in its boot: distribution port already in use
        started = time.monotonic()
        try:
            with pytest.raises(ServerUnavailable, match="exited while starting") as failure:
                server.start()
            elapsed = time.monotonic() - started
            running = server.running
            processes = server.processes()
        finally:
            server.close()

    assert elapsed < START_TIMEOUT_S / 2
    assert str(taken) in str(failure.value)  # the log tail names the port it could not take
    assert not running
    assert processes == []
