"""Fixtures of the chaos suite: the broker kinds of conftest, with Redis on a durable server of its own (append-only
file fsynced on every write), so a restart keeps what was acknowledged. Results stay on the session Redis (db 1),
which is never restarted, or in a SQLite file beside a SQLite broker."""

from __future__ import annotations

import pytest

from tests.support.brokers import ALL_KIND_NAMES, BrokerKind, RabbitMQKind, RedisKind, SQLiteKind


@pytest.fixture(params=ALL_KIND_NAMES)
def broker_kind(request: pytest.FixtureRequest) -> BrokerKind:
    if request.param == "redis":
        return RedisKind(request.getfixturevalue("durable_redis_server"))
    if request.param == "sqlite":
        return SQLiteKind(request.getfixturevalue("tmp_path"))
    return RabbitMQKind(request.getfixturevalue("rabbitmq_server"))
