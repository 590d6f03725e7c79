"""What the Redis broker, the Redis beat store and the Redis result backend share (private to ``taskfleet``): how a
client is built, how redis-py errors become Taskfleet errors (URLs masked), and the hot-path connections that skip
redis-py's per-command machinery.

A command sent through ``redis.Redis`` costs about 100 µs of Python on top of the round trip (pool checkout with a
readiness probe, metrics hooks, argument encoding, retry wrappers). ``HotConnections`` sends commands packed ahead
of time (``pack``, ``Packed``, ``EvalSha``) on connections it keeps for itself, which brings ``delay()``,
``fetch``, ``ack`` and result stores down to little more than the round trip. Everything else goes through the
client.

redis-py internals used here, and nowhere else (pinned to the redis-py majors in pyproject.toml; each is checked,
without a server, by tests/unit/test_redis_internals.py): a client's ``connection_pool.connection_class`` and
``connection_pool.connection_kwargs`` (to open connections of our own, optionally with ``protocol=3``); on a
connection, ``pid``, ``retry.call_with_retry(do, fail)``, ``send_packed_command(command)``,
``read_response(push_request=...)``, ``can_read(timeout=...)``, ``disconnect()`` and
``_parser.set_pubsub_push_handler`` (``keep_pushes``); the RESP encoding of ``pack`` is redis-py's
``pack_command``'s, and error replies become ``ResponseError`` (``NOSCRIPT``: ``NoScriptError``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from hashlib import sha1
from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from taskfleet.errors import BrokerConnectionError, TaskfleetError
from taskfleet.urls import mask_secrets, mask_url

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError)
#: Idle hot-path connections kept per ``HotConnections`` (one per thread that used it at the same time, up to this).
MAX_IDLE_CONNECTIONS = 16

#: An argument of a packed command: bytes as they are, text as UTF-8, integers in decimal.
Arg = bytes | str | int


def connect_redis(url: str, *, socket_timeout_s: float, health_check_interval_s: int,
                  error: type[TaskfleetError]) -> redis.Redis:
    """A client for ``url``. One immediate retry replaces a pooled connection the server dropped (e.g. after a
    restart); anything longer is the caller's policy (publish_retry, the consumer's backoff). A malformed URL
    raises ``error``."""
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=health_check_interval_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
    except ValueError as exc:
        raise error(f"invalid redis URL {mask_url(url)!r}: {mask_secrets(str(exc))}") from exc


@contextmanager
def translate_errors(what: str, action: str, error: type[TaskfleetError]) -> Iterator[None]:
    """Inside this block, unreachable-server errors raise ``BrokerConnectionError`` and other redis errors raise
    ``error``; ``what`` names the component (with its masked URL) in the message."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise BrokerConnectionError(f"{what} unreachable during {action}: {mask_secrets(str(exc))}") from exc
    except RedisError as exc:
        raise error(f"{what} failed {action}: {mask_secrets(str(exc))}") from exc


# -- packing ---------------------------------------------------------------------------------------------------------


def _bulk(arg: Arg) -> bytes:
    if isinstance(arg, str):
        arg = arg.encode()
    elif isinstance(arg, int):
        arg = b"%d" % arg
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def pack(*args: Arg) -> bytes:
    """One command in the Redis protocol (RESP), ready for ``HotConnections.call``."""
    return b"*%d\r\n" % len(args) + b"".join(map(_bulk, args))


class Packed(NamedTuple):
    """The packed start of a command (say a script's sha and keys, the same for every call): ``plus`` completes
    it, so only the arguments that change are encoded per call."""

    data: bytes
    nargs: int

    def plus(self, args: Sequence[Arg]) -> bytes:
        """The whole command: this start, then ``args``."""
        return self.plus_packed(len(args), b"".join(map(_bulk, args)))

    def plus_packed(self, nargs: int, args: bytes) -> bytes:
        """The whole command: this start, then ``nargs`` arguments already packed as ``args``."""
        return b"*%d\r\n%b%b" % (self.nargs + nargs, self.data, args)


def packed(*args: Arg) -> Packed:
    """The start of a command whose first arguments are ``args``."""
    return Packed(b"".join(map(_bulk, args)), len(args))


class EvalSha:
    """A Lua script called by sha. Its sha never changes, so calls can be packed ahead of time (``prefix``)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = sha1(source.encode()).hexdigest()

    def prefix(self, keys: Sequence[str], *args: Arg) -> Packed:
        """A call with these keys and first arguments; ``Packed.plus`` completes it with the rest."""
        return packed("EVALSHA", self.sha, len(keys), *keys, *args)


# -- hot-path connections --------------------------------------------------------------------------------------------


class HotConnections:
    """Connections to ``client``'s server for the hot paths, each used by one caller at a time. A caller takes an
    idle one (or opens a new one), sends its pre-packed commands in one write, reads the replies and puts it back;
    at most ``MAX_IDLE_CONNECTIONS`` are kept idle. A connection is put back only after a complete exchange, and
    one that failed midway is closed, so what comes back is always clean (``send_behind`` keeps its connection
    for the thread that sent, whose next call reads the outstanding replies first). Thread-safe; a process that
    forked opens its own connections (those of its parent are never used). ``protocol=3`` gives RESP3
    connections, on which a subscribed connection still runs ordinary commands."""

    def __init__(self, client: redis.Redis, *, protocol: int = 2) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        if protocol != 2:
            kwargs["protocol"] = protocol
        self._make: Callable[[], Any] = lambda: pool.connection_class(**kwargs)
        self._idle: list[Any] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()
        #: ``behind``: this thread's connection with replies still to read, and how many (see ``send_behind``).
        self._local = threading.local()

    def take(self) -> Any:
        """An idle connection (or a new, not yet connected one); give it back with ``give_back`` after a
        complete exchange, or ``discard`` it. The calling thread gets back the connection of its ``send_behind``,
        the outstanding replies read, so its commands reach the server in the order it sent them."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._idle = []  # the parent's sockets: never written to from here
                    self._local = threading.local()
                    self._pid = os.getpid()
        behind = getattr(self._local, "behind", None)
        if behind is not None:
            self._local.behind = None
            _drain(*behind)
            return behind[0]
        try:
            return self._idle.pop()
        except IndexError:
            return self._make()

    def give_back(self, conn: Any) -> None:
        if len(self._idle) < MAX_IDLE_CONNECTIONS and conn.pid == os.getpid():
            self._idle.append(conn)
        else:
            conn.disconnect()

    @staticmethod
    def discard(conn: Any) -> None:
        conn.disconnect()

    def call(self, payload: bytes, replies: int = 1) -> list[Any]:
        """Send ``payload`` (one or more packed commands) and return their ``replies`` replies, error replies as
        ``ResponseError`` values. A connection the server dropped (a restart, an idle timeout) is replaced and
        the payload sent once more, as redis-py does (so every command sent this way must be safe to repeat). A
        blocking command in the payload must block for less than the socket timeout."""
        conn = self.take()
        try:
            out: list[Any] = conn.retry.call_with_retry(lambda: _exchange(conn, payload, replies),
                                             lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()
            raise
        self.give_back(conn)
        return out

    def send_behind(self, payload: bytes, replies: int) -> None:
        """Send ``payload`` without waiting for its ``replies``: this thread's next call on these connections
        reads and drops them (error replies too) before its own exchange, on the same connection, so the server
        still runs this thread's commands in the order they were sent. For writes nobody waits on (a STARTED
        record before the task runs); a failure shows only in what the calls after it meet."""
        conn = self.take()
        try:
            conn.retry.call_with_retry(lambda: conn.send_packed_command((payload,)), lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()
            raise
        self._local.behind = (conn, replies)

    def call_scripts(self, scripts: Sequence[EvalSha], payload: bytes, replies: int = 1) -> list[Any]:
        """``call`` for a payload of ``EvalSha`` calls: when the server does not know a script (NOSCRIPT: a new or
        restarted server, or SCRIPT FLUSH), ``scripts`` are loaded and the whole payload is sent again, so every
        call in it must be safe to repeat. Raises the first error reply."""
        out = self.call(payload, replies)
        if any(isinstance(reply, NoScriptError) for reply in out):
            self.call(b"".join(pack("SCRIPT", "LOAD", script.source) for script in scripts), len(scripts))
            out = self.call(payload, replies)
        for reply in out:
            if isinstance(reply, ResponseError):
                raise reply
        return out

    def close(self) -> None:
        """Close every idle connection (those in use are closed by their callers' errors or at exit)."""
        idle, self._idle = self._idle, []
        behind = getattr(self._local, "behind", None)
        if behind is not None:
            self._local.behind = None
            idle.append(behind[0])
        for conn in idle:
            conn.disconnect()


def keep_pushes(conn: Any, handler: Callable[[Any], Any]) -> None:
    """Have ``handler`` return each RESP3 push that ``conn`` reads (instead of redis-py's default handler, which
    also logs each one at debug level). A no-op on a parser without push handlers (RESP2, or a redis-py that
    dropped the hook: pushes are then still read as replies, only logged too)."""
    set_handler = getattr(getattr(conn, "_parser", None), "set_pubsub_push_handler", None)
    if set_handler is not None:
        set_handler(handler)


def _drain(conn: Any, replies: int) -> None:
    """Read and drop ``replies`` replies; a connection that fails meanwhile is closed (the next send reopens it,
    and nothing more is owed on a new connection)."""
    try:
        for _ in range(replies):
            try:
                conn.read_response()
            except ResponseError:
                continue
    except (RedisError, OSError):
        conn.disconnect()


def _exchange(conn: Any, payload: bytes, replies: int) -> list[Any]:
    conn.send_packed_command((payload,))
    out: list[Any] = []
    for _ in range(replies):
        try:
            out.append(conn.read_response())
        except ResponseError as exc:  # the whole reply was read: the connection is still in step
            out.append(exc)
    return out
