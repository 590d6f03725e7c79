"""The redis-py internals the Redis hot path relies on (``taskfleet/_connections/redis.py``) are still there and still
shaped as we call them. No server: connections are made, never connected.

pyproject.toml pins redis-py to the majors these were checked on; when a new release fails here, the message names
the internal that moved, which is what must be adapted before the pin is widened.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError, ResponseError

from taskfleet._connections.redis import HotConnections, connect_redis, keep_pushes, pack
from taskfleet.errors import BrokerError

URL = "redis://127.0.0.1:1/0"  # never connected to


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = connect_redis(URL, socket_timeout_s=1, health_check_interval_s=30, error=BrokerError)
    yield client
    client.close()


@pytest.fixture(params=[2, 3], ids=["RESP2", "RESP3"])
def conn(client: redis.Redis, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A connection as ``HotConnections`` makes them (not connected)."""
    conn = HotConnections(client, protocol=request.param).take()
    yield conn
    conn.disconnect()


def takes(function: Callable[..., Any], *params: str, what: str) -> None:
    """Assert that ``function`` accepts the parameters ``params`` by name, naming ``what`` when it does not."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"redis-py internal {what}: no signature ({exc})") from exc
    missing = [p for p in params if p not in signature.parameters]
    assert not missing, f"redis-py internal {what} no longer takes {missing}: its signature is now {signature}"


def has(obj: object, attribute: str, *, what: str) -> Any:
    assert hasattr(obj, attribute), f"redis-py internal {what} is gone (no {attribute!r} on {type(obj).__name__})"
    return getattr(obj, attribute)


def test_a_pool_says_how_to_make_its_connections(client: redis.Redis) -> None:
    pool = client.connection_pool

    connection_class = has(pool, "connection_class", what="ConnectionPool.connection_class")
    kwargs = has(pool, "connection_kwargs", what="ConnectionPool.connection_kwargs")

    assert callable(connection_class), "redis-py internal ConnectionPool.connection_class is not callable"
    assert isinstance(kwargs, dict), "redis-py internal ConnectionPool.connection_kwargs is not a dict"
    conn = connection_class(**{**kwargs, "protocol": 3})
    assert has(conn, "protocol", what="Connection.protocol") in (3, "3"), "Connection(protocol=3) is not RESP3"


def test_a_connection_knows_the_process_that_made_it(conn: Any) -> None:
    assert has(conn, "pid", what="Connection.pid") == os.getpid()


def test_a_connection_sends_packed_commands(conn: Any) -> None:
    takes(has(conn, "send_packed_command", what="Connection.send_packed_command"), "command",
          what="Connection.send_packed_command(command)")


def test_a_connection_shows_its_socket_and_sends_without_a_health_check(conn: Any) -> None:
    # taskfleet/backends/redis_waits.py selects on the socket beside its wake-up socket
    assert has(conn, "_sock", what="Connection._sock") is None  # never connected here
    takes(conn.send_packed_command, "check_health", what="Connection.send_packed_command(check_health=...)")


def test_a_connection_reads_replies_and_pushes(conn: Any) -> None:
    takes(has(conn, "read_response", what="Connection.read_response"), "push_request",
          what="Connection.read_response(push_request=...)")
    takes(has(conn, "can_read", what="Connection.can_read"), "timeout", what="Connection.can_read(timeout=...)")
    assert callable(has(conn, "disconnect", what="Connection.disconnect"))


def test_a_connection_retries_with_its_clients_policy(conn: Any) -> None:
    retry = has(conn, "retry", what="Connection.retry")
    call_with_retry = has(retry, "call_with_retry", what="Retry.call_with_retry")
    takes(call_with_retry, "do", "fail", what="Retry.call_with_retry(do, fail)")

    assert call_with_retry(lambda: "done", lambda _error: None) == "done"


def test_a_resp3_connection_lets_us_keep_pushes_as_replies(client: redis.Redis) -> None:
    conn = HotConnections(client, protocol=3).take()
    parser = has(conn, "_parser", what="Connection._parser")
    has(parser, "set_pubsub_push_handler", what="the RESP3 parser's set_pubsub_push_handler")

    keep_pushes(conn, lambda push: push)  # what RedisBackend does to every listening connection
    conn.disconnect()


def test_our_packed_commands_are_what_redis_py_would_send(conn: Any) -> None:
    pack_command = has(conn, "pack_command", what="Connection.pack_command")
    args: list[bytes | str | int] = ["EVALSHA", "ab" * 20, 2, "tf:{q}:ready", "tf:{q}:dlv", b"\x00\r\n\xff", 0, "é"]

    assert b"".join(pack_command(*args)) == pack(*args)


def test_an_error_reply_becomes_a_response_error_and_noscript_a_no_script_error() -> None:
    from redis._parsers.base import BaseParser

    parse_error = has(BaseParser, "parse_error", what="BaseParser.parse_error")

    assert isinstance(parse_error("ERR wrong number of arguments"), ResponseError)
    assert isinstance(parse_error("NOSCRIPT No matching script. Please use EVAL."), NoScriptError)
    assert issubclass(NoScriptError, ResponseError)


def test_a_registered_script_shows_its_text(client: redis.Redis) -> None:
    script = client.register_script("return 1")

    assert has(script, "script", what="Script.script") == "return 1"
