"""Compressed messages through a real prefork worker on every broker (``broker_kind``): a compressed task runs, a
decompression bomb and a corrupt body are dead-lettered with the reason, and the worker keeps running."""

from __future__ import annotations

import functools
import zlib

import pytest

from taskfleet import App
from taskfleet.compression import CODECS, compress
from tests import tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

GIB = 1 << 30


@functools.cache
def gzip_bomb() -> bytes:
    """A message whose gzip body inflates to 1 GiB of zeros, yet fits under the default ``max_message_bytes``
    (1 MiB): compressed a MiB at a time, never held whole."""
    chunk = bytes(1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = b"".join(packer.compress(chunk) for _ in range(GIB // len(chunk))) + packer.flush()
    return b"application/json;compression=gzip\n" + body


def test_compressed_tasks_run_with_every_codec(app: App, start_worker: StartWorker) -> None:
    start_worker()

    results = [tasks.add.apply_async((codec, "x" * 50_000), compression=codec) for codec in CODECS]

    assert [result.get(timeout=20) for result in results] == [codec + "x" * 50_000 for codec in CODECS]


def test_a_gzip_bomb_is_dead_lettered_with_the_reason_and_the_worker_keeps_running(
        app: App, start_worker: StartWorker) -> None:
    # Given a running worker, and a 1 GiB gzip bomb that fits under max_message_bytes
    worker = start_worker()
    bomb = gzip_bomb()
    assert len(bomb) <= app.settings.max_message_bytes

    # When the bomb is sent, then a plain task
    app.broker.enqueue("tests", "bomb", bomb)
    after = tasks.add.delay(20, 22)

    # Then the task runs, the bomb is dead-lettered with the reason, and the worker is still up
    assert after.get(timeout=20) == 42
    wait_for(lambda: len(app.broker.dead_letters("tests")) == 1, timeout=10, message="the bomb dead-lettered")
    [dead] = app.broker.dead_letters("tests")
    assert dead.message_id == "bomb"
    assert dead.reason == ("decompression bomb: the gzip body inflates to more than max_decompressed_bytes=16777216; "
                           "it was not inflated further")
    assert dead.data == bomb, "dead-lettered with its bytes untouched"
    assert worker.proc.poll() is None
    assert tasks.add.delay(1, 1).get(timeout=20) == 2


def test_a_corrupt_compressed_body_is_dead_lettered_with_the_reason(app: App, start_worker: StartWorker) -> None:
    start_worker()

    app.broker.enqueue("tests", "corrupt", b"application/json;compression=bz2\n" + compress("bz2", b"{}")[:-4])

    wait_for(lambda: len(app.broker.dead_letters("tests")) == 1, timeout=20, message="the message dead-lettered")
    assert app.broker.dead_letters("tests")[0].reason == "malformed message: its bz2 body is truncated"
    assert tasks.add.delay(1, 1).get(timeout=20) == 2
