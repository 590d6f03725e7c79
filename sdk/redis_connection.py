"""What the Redis broker and the Redis result backend share: how a client is built and how redis-py errors become
Taskfleet errors (URLs masked)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from taskfleet.errors import BrokerConnectionError, TaskfleetError
from taskfleet.urls import mask_secrets, mask_url

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError)


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
