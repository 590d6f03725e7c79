"""Specification of message compression: the codecs (taskfleet.compression), the framing line that names the codec
(taskfleet.message), the publisher's limits (taskfleet.producer) and a worker's decode path (a decompression bomb or
a corrupt body is dead-lettered with the reason; the worker goes on)."""

from __future__ import annotations

import bz2
import functools
import lzma
import os
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest

from taskfleet import App, Message, State
from taskfleet.compression import CODECS, DecompressionBomb, compress, compression_name, decompress
from taskfleet.errors import ConfigurationError, ContentTypeRefused, DecodeError, MessageTooLarge
from taskfleet.serializers import SERIALIZERS
from taskfleet.worker.executor import DeadLetter, Executor
from tests import tasks

QUEUE = "tests"
JSON = SERIALIZERS["json"]
BODY = os.urandom(2000) + b"taskfleet " * 20_000  # 202,000 bytes: part noise, part very compressible


@functools.cache
def zeros_bomb(codec: str, size: int) -> bytes:
    """``size`` zero bytes compressed with ``codec``, compressed a MiB at a time (never held whole)."""
    chunk = bytes(1 << 20)
    packers = {"gzip": lambda: zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), "zlib": zlib.compressobj,
               "bz2": bz2.BZ2Compressor, "lzma": lzma.LZMACompressor}
    packer = packers[codec]()
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(parts) + packer.flush()


@pytest.fixture
def app(memory_app: App) -> Iterator[App]:
    """The test tasks' app on the stub broker; compression settings restored afterwards."""
    yield memory_app
    memory_app.configure(compression=None, max_message_bytes=1024 * 1024, max_decompressed_bytes=16 * 1024 * 1024)


def run_next(app: App) -> DeadLetter | str:
    """Run the next message of the tests queue through an Executor: the dead-letter decision, or the outcome."""
    [delivery] = app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
    outcome = Executor(app, app.backend, on_start=lambda started: None).run(delivery)
    return outcome.decision if isinstance(outcome.decision, DeadLetter) else outcome.outcome


# -- the codecs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_each_codec_gives_back_what_it_compressed(codec: str) -> None:
    packed = compress(codec, BODY)

    assert len(packed) < len(BODY) // 5
    assert decompress(codec, packed, max_bytes=len(BODY)) == BODY


@pytest.mark.parametrize(("name", "codec"), [("gzip", "gzip"), ("GZIP", "gzip"), ("zlib", "zlib"), ("bz2", "bz2"),
                                             ("bzip2", "bz2"), ("lzma", "lzma"), ("xz", "lzma")])
def test_celerys_codec_names_are_read_as_their_codec(name: str, codec: str) -> None:
    assert compression_name(name) == codec


@pytest.mark.parametrize("name", ["brotli", "zstd", "", "none"])
def test_an_unknown_codec_is_a_configuration_error_listing_the_known_ones(name: str) -> None:
    with pytest.raises(ConfigurationError, match="gzip, zlib, bz2, lzma"):
        compression_name(name)
    with pytest.raises(ConfigurationError, match="gzip, zlib, bz2, lzma"):
        App("t", compression=name)


@pytest.mark.parametrize("codec", CODECS)
def test_a_body_that_inflates_past_the_limit_is_a_bomb_found_without_inflating_it_all(codec: str) -> None:
    # Given 32 MiB of zeros, compressed to a few tens of KiB at most
    bomb = zeros_bomb(codec, 32 << 20)
    tracemalloc.start()

    # When it is inflated with a 1 MiB limit
    try:
        with pytest.raises(DecompressionBomb, match="max_decompressed_bytes=1048576"):
            decompress(codec, bomb, max_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Then it stopped at the limit: it held the limit and the codec's own state (lzma's 8 MiB dictionary), never
    # the 32 MiB the bomb inflates to
    assert peak < 12 << 20


@pytest.mark.parametrize("codec", CODECS)
def test_a_body_exactly_at_the_limit_is_inflated(codec: str) -> None:
    assert decompress(codec, compress(codec, BODY), max_bytes=len(BODY)) == BODY
    with pytest.raises(DecompressionBomb):
        decompress(codec, compress(codec, BODY), max_bytes=len(BODY) - 1)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("damage", "reason"), [
    (lambda data: data[: len(data) // 2], "truncated"),
    (lambda data: data + b"more", "data after the end"),
    (lambda data: b"not " + data, "cannot decompress"),
])
def test_a_corrupt_body_is_a_decode_error_saying_what_is_wrong(codec: str, damage: object, reason: str) -> None:
    damaged = damage(compress(codec, BODY))  # type: ignore[operator]

    with pytest.raises(DecodeError, match=reason):
        decompress(codec, damaged, max_bytes=len(BODY))


# -- the framing line ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_a_compressed_message_names_its_codec_in_the_framing_line_and_decodes_to_itself(codec: str) -> None:
    message = Message(id="m1", task="tests.add", args=(1, 2), kwargs={"note": "x" * 5000})

    data = message.encode(JSON, codec)

    assert data.startswith(f"application/json;compression={codec}\n".encode())
    assert len(data) < 1000
    decoded = Message.decode(data, accept=frozenset({"json"}))
    assert decoded == message
    assert (decoded.serializer, decoded.compression) == ("json", codec)


def test_an_uncompressed_message_of_before_reads_as_it_always_did() -> None:
    data = b'application/json\n{"v":1,"id":"m1","task":"tests.add","args":[1,2],"queue":"tests"}'

    decoded = Message.decode(data, accept=frozenset({"json"}))

    assert (decoded.id, decoded.args, decoded.serializer, decoded.compression) == ("m1", (1, 2), "json", None)


@pytest.mark.parametrize("head", [b"application/json;compression=brotli", b"application/json;compression=",
                                  b"application/json;level=9"])
def test_an_unknown_codec_in_the_framing_line_is_a_decode_error(head: bytes) -> None:
    with pytest.raises(DecodeError, match="malformed message: unknown"):
        Message.decode(head + b"\n" + compress("gzip", b"{}"), accept=frozenset({"json"}))


def test_a_refused_content_type_is_refused_before_its_body_is_inflated() -> None:
    bomb = b"application/x-python-pickle;compression=gzip\n" + zeros_bomb("gzip", 32 << 20)

    with pytest.raises(ContentTypeRefused):
        Message.decode(bomb, accept=frozenset({"json"}), max_decompressed_bytes=1024)


# -- publishing ----------------------------------------------------------------------------------------------------


def stored(app: App) -> bytes:
    [delivery] = app.broker.fetch([QUEUE], max_messages=1, timeout_s=0)
    app.broker.release([delivery])
    return delivery.data


def test_an_app_with_compression_compresses_every_message_it_sends(app: App) -> None:
    app.configure(broker="memory://", result_backend="memory://", compression="gzip")

    tasks.add.delay(2, 3)

    assert stored(app).startswith(b"application/json;compression=gzip\n")


def test_a_calls_compression_wins_over_the_apps(app: App) -> None:
    app.configure(broker="memory://", result_backend="memory://", compression="gzip")

    tasks.add.apply_async((2, 3), compression="xz")

    assert stored(app).startswith(b"application/json;compression=lzma\n")


def test_the_size_limit_applies_to_the_compressed_bytes(app: App) -> None:
    # Given a limit of 2 KiB and an argument of 100 KB that compresses well
    app.configure(broker="memory://", result_backend="memory://", max_message_bytes=2048)
    big = "ab" * 50_000
    with pytest.raises(MessageTooLarge):
        tasks.add.delay(big, "")

    # When it is sent compressed
    tasks.add.apply_async((big, ""), compression="zlib")

    # Then it is sent: what counts is its size on the wire
    assert len(stored(app)) < 2048


def test_a_body_above_max_decompressed_bytes_is_not_compressed_nor_sent(app: App) -> None:
    app.configure(broker="memory://", result_backend="memory://", compression="gzip", max_decompressed_bytes=4096)

    with pytest.raises(MessageTooLarge, match="max_decompressed_bytes=4096"):
        tasks.add.delay("x" * 5000, "")

    assert app.broker.queue_depth(QUEUE).ready == 0


# -- a worker's decode path ----------------------------------------------------------------------------------------


def test_a_worker_runs_a_compressed_task(app: App) -> None:
    result = tasks.add.apply_async((2, 3), compression="bz2")

    assert run_next(app) == "success"
    assert result.get(timeout=1) == 5


def test_a_decompression_bomb_is_dead_lettered_with_the_reason_and_the_worker_goes_on(app: App) -> None:
    # Given a 1 MiB limit on inflating, a bomb of 32 MiB zeros, then a plain task
    app.configure(broker="memory://", result_backend="memory://", max_decompressed_bytes=1 << 20)
    app.broker.enqueue(QUEUE, "bomb", b"application/json;compression=gzip\n" + zeros_bomb("gzip", 32 << 20))
    after = tasks.add.delay(1, 1)

    # When the worker takes them
    bomb = run_next(app)
    ran = run_next(app)

    # Then the bomb is dead-lettered with the reason, and the next task runs
    assert isinstance(bomb, DeadLetter)
    assert bomb.reason.startswith("decompression bomb: the gzip body inflates to more than "
                                  "max_decompressed_bytes=1048576")
    assert ran == "success"
    assert after.get(timeout=1) == 2


def test_a_corrupt_compressed_body_is_dead_lettered_with_the_reason(app: App) -> None:
    app.broker.enqueue(QUEUE, "corrupt", b"application/json;compression=zlib\n" + compress("zlib", b"{}")[:-3])

    decision = run_next(app)

    assert isinstance(decision, DeadLetter)
    assert decision.reason == "malformed message: its zlib body is truncated"


def test_a_retry_is_sent_compressed_as_its_first_attempt_was(app: App) -> None:
    # Given a task that fails once, sent with lzma by an app that does not compress
    result = tasks.flaky.apply_async(("/dev/null", 1), compression="lzma")

    # When it runs and asks for a retry
    assert run_next(app) == "retry"

    # Then its next attempt is stored compressed the same way
    [delivery] = app.broker.fetch([QUEUE], max_messages=1, timeout_s=10)
    assert delivery.data.startswith(b"application/json;compression=lzma\n")
    assert app.backend is not None
    record = app.backend.get(result.id)
    assert record is not None
    assert record.state is State.RETRY
