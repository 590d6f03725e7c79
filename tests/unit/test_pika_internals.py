"""The fence around the pika internals the RabbitMQ broker relies on, checked against the installed pika without a
server.

``ConfirmPublisher`` (``taskfleet.brokers.rabbitmq._publisher``) pipelines publishes below pika's public API: it
enables confirms on the asynchronous channel under a ``BlockingChannel`` (``_impl``), packs the frames itself with the
channel's number and the connection's negotiated ``frame_max``, hands them to the connection's output buffer
(``_output_marshaled_frames``, after ``_raise_if_not_open``) and pumps the connection with ``_flush_output`` until its
confirms have arrived. test_rabbitmq_publisher.py replaces all of that with a fake, so only this file notices when a
pika release changes it. A failure names the internal and where it is used: adapt the publisher (and its fake) before
widening the pika pin in pyproject.toml. The frames' bytes are checked against pika's encoder in
test_rabbitmq_frames.py.

The stand-in connection below uses further internals to run pika's frame dispatch without a socket; when it is what
breaks, the tests error in setup rather than fail.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.connection
import pika.exceptions
import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from pika import frame, spec
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.select_connection import IOLoop, SelectConnection

from tests.support.layout import REPO

USED_BY = ("taskfleet/brokers/rabbitmq/_output.py (write, pump_until), used by _publisher.py (ConfirmPublisher) and "
           "_appender.py (StreamAppender)")


def shape(function: Callable[..., Any]) -> str:
    """A signature as parameter names and kinds only (pika 1.4 added annotations that 1.3 lacks)."""
    parts = []
    for parameter in inspect.signature(function).parameters.values():
        prefix = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        default = "=" if parameter.default is not parameter.empty else ""
        parts.append(f"{prefix}{parameter.name}{default}")
    return f"({', '.join(parts)})"


class StandInConnection(pika.connection.Connection):
    """pika's asynchronous connection with no socket: what it writes is collected in ``emitted``."""

    def __init__(self, parameters: pika.ConnectionParameters) -> None:
        self.emitted: list[bytes] = []
        super().__init__(parameters, internal_connection_workflow=False)

    def _adapter_call_later(self, delay: float, callback: Callable[[], None]) -> object:
        return object()

    def _adapter_remove_timeout(self, timeout_id: object) -> None:
        pass

    def _adapter_add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        pass

    def _adapter_connect_stream(self) -> None:
        pass

    def _adapter_disconnect_stream(self) -> None:
        pass

    def _adapter_emit_data(self, data: bytes) -> None:
        self.emitted.append(data)


@pytest.fixture
def connection() -> StandInConnection:
    """A stand-in connection that has negotiated ``frame_max`` 8192 with a server that supports confirms."""
    conn = StandInConnection(pika.ConnectionParameters(frame_max=131072))
    conn.connection_state = conn.CONNECTION_TUNE
    conn._on_connection_tune(frame.Method(0, spec.Connection.Tune(channel_max=2047, frame_max=8192, heartbeat=0)))
    conn.connection_state = conn.CONNECTION_OPEN
    conn.server_capabilities = {"publisher_confirms": True, "basic.nack": True}
    return conn


@pytest.fixture
def channel(connection: StandInConnection) -> pika.channel.Channel:
    """An open asynchronous channel number 7 of ``connection``."""
    impl = pika.channel.Channel(connection, 7, None)
    connection._channels[7] = impl
    impl._set_state(impl.OPEN)
    return impl


def test_the_installed_pika_is_in_the_range_both_extras_pin() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    pins = {name: str(Requirement(r).specifier) for name in ("rabbitmq", "dev") for r in extras[name]
            if Requirement(r).name == "pika"}

    assert len(set(pins.values())) == 1, f"the rabbitmq and dev extras pin pika differently: {pins}"
    specifier = Requirement(f"pika{pins['rabbitmq']}").specifier
    assert specifier.contains(Version(pika.__version__)), (
        f"pika {pika.__version__} is installed, outside the tested range pika{specifier}: run this file and the "
        "RabbitMQ tests with it before widening the pin")
    assert any(s.operator == "<" for s in specifier), f"pika{specifier} has no upper bound: {USED_BY} needs one"


@pytest.mark.parametrize(("owner", "name", "expected"), [
    (BlockingChannel, "__init__", "(self, channel_impl, connection)"),  # keeps channel_impl as _impl
    (BlockingChannel, "_flush_output", "(self, *waiters)"),
    (pika.channel.Channel, "confirm_delivery", "(self, ack_nack_callback, callback=)"),
    (pika.channel.Channel, "add_on_return_callback", "(self, callback)"),
    (pika.channel.Channel, "_raise_if_not_open", "(self)"),
    (pika.connection.Connection, "_output_marshaled_frames", "(self, marshaled_frames)"),
    (frame.Header, "__init__", "(self, channel_number, body_size, props)"),
    # ConfirmPublisher.drain: a deadline that fires inside _flush_output (the blocking connection's own timers
    # fire only in process_data_events)
    (IOLoop, "call_later", "(self, delay, callback)"),
    (IOLoop, "remove_timeout", "(self, timeout_handle)"),
])
def test_each_pika_internal_the_publisher_calls_has_the_signature_it_calls_it_with(
    owner: type, name: str, expected: str
) -> None:
    internal = f"{owner.__module__}.{owner.__qualname__}.{name}"
    function = getattr(owner, name, None)

    assert callable(function), f"pika {pika.__version__} has no {internal} any more; {USED_BY} calls it as {expected}"
    assert shape(function) == expected, (
        f"pika {pika.__version__} changed {internal}: now {shape(function)}, {USED_BY} calls it as {expected}")


def test_the_blocking_connections_asynchronous_connection_exposes_its_ioloop() -> None:
    assert isinstance(getattr(SelectConnection, "ioloop", None), property), (
        f"pika {pika.__version__}: SelectConnection.ioloop is gone; {USED_BY} (drain) sets its deadline on it")


def test_a_blocking_channel_keeps_its_asynchronous_channel_in_impl(channel: pika.channel.Channel) -> None:
    problem = (f"pika {pika.__version__}: BlockingChannel._impl is no longer the asynchronous channel it wraps; "
               f"{USED_BY} enables confirms and writes frames on it")
    try:
        blocking = BlockingChannel(channel, connection=object())
    except Exception as exc:
        pytest.fail(f"{problem} (BlockingChannel(channel_impl, connection) raised {exc!r})")

    assert getattr(blocking, "_impl", None) is channel, problem


def test_the_asynchronous_channel_knows_its_number_and_its_connection(
    channel: pika.channel.Channel, connection: StandInConnection
) -> None:
    assert getattr(channel, "channel_number", None) == 7, (
        f"pika {pika.__version__}: pika.channel.Channel.channel_number is gone; {USED_BY} puts it in every frame")
    assert getattr(channel, "connection", None) is connection, (
        f"pika {pika.__version__}: pika.channel.Channel.connection is gone; {USED_BY} writes frames through it")


def test_the_connection_parameters_hold_the_negotiated_frame_max(connection: StandInConnection) -> None:
    frame_max = getattr(getattr(connection, "params", None), "frame_max", None)

    assert frame_max == 8192, (
        f"pika {pika.__version__}: Connection.params.frame_max is no longer the frame_max negotiated with the server "
        f"(got {frame_max}, the server tuned 8192); {USED_BY} splits bodies by it")


def test_output_marshaled_frames_writes_each_chunk_unchanged_in_order(connection: StandInConnection) -> None:
    before = len(connection.emitted)

    connection._output_marshaled_frames([b"\x01frames of several messages\xce", b"\x03more\xce"])

    assert connection.emitted[before:] == [b"\x01frames of several messages\xce", b"\x03more\xce"], (
        f"pika {pika.__version__}: Connection._output_marshaled_frames no longer hands each chunk as it is to the "
        f"transport; {USED_BY} joins the frames of many messages into one chunk")


def test_raise_if_not_open_raises_on_a_channel_that_is_not_open(connection: StandInConnection) -> None:
    closed = pika.channel.Channel(connection, 8, None)

    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        closed._raise_if_not_open()
    closed._set_state(closed.OPEN)
    closed._raise_if_not_open()  # open: no error


def test_confirms_reach_the_ack_nack_callback_as_method_frames_with_tag_and_multiple(
    channel: pika.channel.Channel, connection: StandInConnection
) -> None:
    confirms: list[Any] = []
    selected: list[Any] = []
    channel.confirm_delivery(ack_nack_callback=confirms.append, callback=selected.append)
    connection._process_frame(frame.Method(7, spec.Confirm.SelectOk()))

    connection._process_frame(frame.Method(7, spec.Basic.Ack(delivery_tag=3, multiple=True)))
    connection._process_frame(frame.Method(7, spec.Basic.Nack(delivery_tag=4, multiple=False)))

    assert len(selected) == 1, f"pika {pika.__version__}: confirm_delivery's callback no longer gets Confirm.SelectOk"
    got = [(type(c.method), c.method.delivery_tag, c.method.multiple) for c in confirms]
    assert got == [(spec.Basic.Ack, 3, True), (spec.Basic.Nack, 4, False)], (
        f"pika {pika.__version__}: confirm_delivery's ack_nack_callback no longer receives each basic.ack/nack as a "
        f"frame whose .method has delivery_tag and multiple (got {got}); {USED_BY} settles confirms from them")


def test_a_returned_message_reaches_the_return_callback_with_its_method_and_properties(
    channel: pika.channel.Channel, connection: StandInConnection
) -> None:
    returned: list[tuple[Any, ...]] = []
    channel.add_on_return_callback(lambda *args: returned.append(args))

    connection._process_frame(frame.Method(7, spec.Basic.Return(312, "NO_ROUTE", "ex", "billing")))
    connection._process_frame(frame.Header(7, 1, pika.BasicProperties(message_id="m-1")))
    connection._process_frame(frame.Body(7, b"x"))

    got = [(ch is channel, m.exchange, m.routing_key, p.message_id, body) for ch, m, p, body in returned]
    assert got == [(True, "ex", "billing", "m-1", b"x")], (
        f"pika {pika.__version__}: add_on_return_callback's callback is no longer called as (channel, method, "
        f"properties, body) for a basic.return (got {got}); {USED_BY} matches returns to messages by them")


def test_a_connection_exposes_its_socket_where_the_link_reads_it() -> None:
    """``_link.socket_fd`` reads ``BlockingConnection._impl._transport._sock`` to hand a worker child's socket to
    its supervisor; without it the hand-over silently stops (dead children's unstarted messages are counted)."""
    from pika.adapters import base_connection
    from pika.adapters.utils import io_services_utils

    used_by = "taskfleet/brokers/rabbitmq/_link.py (socket_fd)"
    assert "self._transport = transport" in inspect.getsource(base_connection.BaseConnection), used_by
    assert "self._sock = sock" in inspect.getsource(io_services_utils._AsyncTransportBase.__init__), used_by


def test_a_connection_marks_the_channels_whose_deliveries_wait_for_dispatch_where_the_link_reads_it() -> None:
    """``_link._undispatched`` reads ``BlockingConnection._channels_pending_dispatch``: a delivery pika read during
    another operation waits there for the next pump, and a worker child takes it (and reports it to its supervisor)
    before each task only when that set says so. Without it the link pumps before every task (no loss, slower)."""
    from pika.adapters.blocking_connection import BlockingConnection

    used_by = "taskfleet/brokers/rabbitmq/_link.py (_undispatched)"
    assert "self._channels_pending_dispatch" in inspect.getsource(BlockingConnection.__init__), used_by
    assert "self._channels_pending_dispatch.add(" in inspect.getsource(
        BlockingConnection._request_channel_dispatch), used_by
    assert "self.connection._request_channel_dispatch(" in inspect.getsource(BlockingChannel._add_pending_event), (
        used_by)
    assert "_add_pending_event(" in inspect.getsource(BlockingChannel._on_consumer_message_delivery), used_by


def test_a_channel_hands_each_delivery_to_its_own_on_deliver_and_rejects_a_cancelled_consumers() -> None:
    """``Consumer._keep_late_deliveries`` replaces ``Channel._on_deliver`` on the instance to hold what arrives for
    a consumer it cancelled: pika rejects (requeues) that before the cancel's reply, to come back flagged as
    redelivered and be counted as a lost delivery. The override only works while pika dispatches through the
    instance attribute with these arguments."""
    used_by = "taskfleet/brokers/rabbitmq/_consumer.py (Consumer._keep_late_deliveries)"
    channel_source = inspect.getsource(pika.channel.Channel)
    assert "self._on_deliver(*response)" in channel_source, f"pika {pika.__version__}: {used_by}"
    assert shape(pika.channel.Channel._on_deliver) == "(self, method_frame, header_frame, body)", (
        f"pika {pika.__version__} changed Channel._on_deliver: now {shape(pika.channel.Channel._on_deliver)}; "
        f"{used_by} replaces it")
    assert "self.basic_reject(method_frame.method.delivery_tag)" in inspect.getsource(
        pika.channel.Channel._on_deliver), f"pika {pika.__version__} no longer rejects there; {used_by} may be moot"


class WatchRecorder:
    """The I/O services a pika transport asks to watch its socket: which watches are on."""

    def __init__(self) -> None:
        self.readers: set[int] = set()
        self.writers: set[int] = set()

    def set_reader(self, fd: int, _on_readable: Callable[[], None]) -> None:
        self.readers.add(fd)

    def set_writer(self, fd: int, _on_writable: Callable[[], None]) -> None:
        self.writers.add(fd)

    def remove_writer(self, fd: int) -> bool:
        self.writers.discard(fd)
        return True


class ReceivingProtocol:
    """The protocol side of a pika transport (the connection, in pika): what it was handed."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


@pytest.fixture
def plaintext_transport() -> Any:
    """pika's plain-TCP transport on one end of a socket pair: (transport, its watches, the other end); what it
    reads goes to ``transport._protocol`` (a ``ReceivingProtocol``)."""
    import socket

    from pika.adapters.utils import io_services_utils

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    watches = WatchRecorder()
    transport = io_services_utils._AsyncPlaintextTransport(ours, ReceivingProtocol(), watches)  # type: ignore[arg-type]
    yield transport, watches, theirs
    ours.close()
    theirs.close()


def test_a_plaintext_transport_sends_its_buffer_when_told_the_socket_is_writable(plaintext_transport: Any) -> None:
    """``ConfirmPublisher._write_then_read`` writes a windowed publish from the calling thread: it checks that the
    connection's ``_transport`` is pika's ``_AsyncPlaintextTransport``, that ``get_write_buffer_size`` has something,
    and calls ``_on_socket_writable``, which must send the buffer now and stop watching for writability, as pika's
    poll would.
    Otherwise the message waits for the next pump (up to ``PUMP_S``)."""
    from pika.adapters import base_connection

    used_by = "taskfleet/brokers/rabbitmq/_publisher.py (ConfirmPublisher._write_then_read)"
    transport, watches, theirs = plaintext_transport
    fd = transport._sock.fileno()
    assert "self._transport = transport" in inspect.getsource(base_connection.BaseConnection), used_by

    frames = b"\x01a basic.publish and its frames\xce"
    transport.write(frames)
    unchanged = f"pika {pika.__version__}: a plaintext transport's write() no longer buffers and watches for " \
        f"writability; {used_by} relies on both"
    assert transport.get_write_buffer_size() == len(frames), unchanged
    assert fd in watches.writers, unchanged
    transport._on_socket_writable()

    assert theirs.recv(100) == frames, (
        f"pika {pika.__version__}: _AsyncPlaintextTransport._on_socket_writable no longer sends the buffer; {used_by}")
    assert transport.get_write_buffer_size() == 0, used_by
    assert fd not in watches.writers, used_by


def test_a_plaintext_transport_keeps_what_the_socket_did_not_take(plaintext_transport: Any) -> None:
    """When the socket's buffer is full the rest stays in pika's buffer, still watched: pika's next poll (the
    publisher's ``_flush_output``) sends it, so nothing is lost or reordered."""
    transport, watches, theirs = plaintext_transport
    big = bytes(range(256)) * 40_000  # 10 MB: more than a socket pair's buffers hold

    transport.write(big)
    transport._on_socket_writable()

    left = transport.get_write_buffer_size()
    assert 0 < left < len(big)
    assert transport._sock.fileno() in watches.writers
    received = bytearray()
    while len(received) < len(big) - left:
        received += theirs.recv(1 << 20)
    assert bytes(received) == big[: len(big) - left]


def test_a_plaintext_transport_reads_what_has_arrived_when_told_the_socket_is_readable(
        plaintext_transport: Any) -> None:
    """``ConfirmPublisher._write_then_read`` calls ``_on_socket_readable`` right after a windowed publish: it must hand
    what has arrived (the confirms) to the connection and return, without waiting, when nothing more has. Otherwise
    the confirms wait for the next pump, and a lost connection publishes their messages a second time."""
    used_by = "taskfleet/brokers/rabbitmq/_publisher.py (ConfirmPublisher._write_then_read)"
    transport, _watches, theirs = plaintext_transport
    theirs.sendall(b"\x01basic.ack frames\xce")

    transport._on_socket_readable()
    transport._on_socket_readable()  # nothing more: returns at once

    assert b"".join(transport._protocol.received) == b"\x01basic.ack frames\xce", (
        f"pika {pika.__version__}: _AsyncPlaintextTransport._on_socket_readable no longer hands what arrived to "
        f"the protocol's data_received; {used_by}")
    assert transport._state == transport._STATE_ACTIVE, f"nothing to read aborted the transport; {used_by}"
