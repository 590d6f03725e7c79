"""Specification of the worker's process-wide logging (taskfleet.worker.logging)."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from taskfleet.errors import ConfigurationError
from taskfleet.worker.logging import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures logging for the whole process; put the root logger and structlog back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class _TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


class _RecordingStream(io.StringIO):
    """A text stream without a byte buffer that remembers every ``write`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


class _RecordingBuffer(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return super().write(data)


def test_a_password_in_a_url_never_reaches_the_log() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)

    get_logger().info("connecting to redis://:s3cret@redis:6379/0")

    assert "s3cret" not in stream.getvalue()
    assert _json_lines(stream)[0]["event"] == "connecting to redis://:***@redis:6379/0"


def test_a_password_in_a_bound_value_is_masked() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)

    get_logger().bind(broker_url="amqp://guest:hunter2@rabbit/").info("connected", error=OSError("redis://u:pw@h"))

    line = _json_lines(stream)[0]
    assert line["broker_url"] == "amqp://guest:***@rabbit/"
    assert line["error"] == "redis://u:***@h"


def test_a_password_in_an_exception_traceback_is_masked() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)

    try:
        raise ConnectionError("cannot reach redis://:s3cret@redis:6379")
    except ConnectionError:
        get_logger().exception("broker_down")

    assert "s3cret" not in stream.getvalue()
    assert "redis://:***@redis:6379" in _json_lines(stream)[0]["exception"]


def test_a_json_line_has_the_event_its_level_and_an_iso_utc_timestamp() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)

    get_logger().warning("queue_full")

    line = _json_lines(stream)[0]
    assert (line["event"], line["level"]) == ("queue_full", "warning")
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)


def test_bound_key_values_appear_in_the_json_line() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)

    get_logger().bind(task_id="t-1").info("task_started", queue="default", attempt=2)

    line = _json_lines(stream)[0]
    assert (line["task_id"], line["queue"], line["attempt"]) == ("t-1", "default", 2)


def test_a_named_logger_carries_its_name_as_the_logger_key() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)

    get_logger("taskfleet.worker.supervisor").info("started")

    assert _json_lines(stream)[0]["logger"] == "taskfleet.worker.supervisor"


def test_events_below_the_configured_level_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="warning", stream=stream)

    log = get_logger()
    log.info("quiet")
    log.error("loud")

    assert [line["event"] for line in _json_lines(stream)] == ["loud"]


def test_level_names_are_case_insensitive() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="DEBUG", stream=stream)

    get_logger().debug("details")

    assert _json_lines(stream)[0]["event"] == "details"


@pytest.mark.parametrize("level", ["verbose", "", "warn "])
def test_an_unknown_level_is_a_configuration_error(level: str) -> None:
    with pytest.raises(ConfigurationError, match="log level"):
        configure_logging(level=level, stream=io.StringIO())


def test_an_unknown_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="log format"):
        configure_logging(fmt="xml", stream=io.StringIO())  # type: ignore[arg-type]


def test_auto_format_writes_json_when_the_stream_is_not_a_tty() -> None:
    stream = io.StringIO()
    configure_logging(fmt="auto", stream=stream)

    get_logger().info("hello")

    assert _json_lines(stream)[0]["event"] == "hello"


def test_auto_format_renders_for_humans_when_the_stream_is_a_tty() -> None:
    stream = _TtyStream()
    configure_logging(fmt="auto", stream=stream)

    get_logger().info("hello", queue="default")

    text = stream.getvalue()
    assert "hello" in text
    assert "queue" in text
    assert not text.startswith("{")


def test_the_console_format_writes_one_masked_line_per_event() -> None:
    stream = io.StringIO()
    configure_logging(fmt="console", stream=stream)

    get_logger().info("connecting", url="redis://:s3cret@h")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "redis://:***@h" in lines[0]
    assert "s3cret" not in lines[0]


def test_stdlib_log_records_go_to_the_same_json_output_with_passwords_masked() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)

    logging.getLogger("redis.connection").warning("lost %s", "redis://:s3cret@h:6379")

    line = _json_lines(stream)[0]
    assert line["event"] == "lost redis://:***@h:6379"
    assert (line["level"], line["logger"]) == ("warning", "redis.connection")


def test_stdlib_log_records_below_the_configured_level_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="warning", stream=stream)

    logging.getLogger("redis.connection").info("chatty")

    assert stream.getvalue() == ""


def test_configuring_again_with_the_same_arguments_does_not_duplicate_lines() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    configure_logging(fmt="json", stream=stream)

    logging.getLogger("redis").warning("once")
    get_logger().info("twice?")

    assert [line["event"] for line in _json_lines(stream)] == ["once", "twice?"]


def test_each_line_is_one_write_call_on_a_text_stream() -> None:
    stream = _RecordingStream()
    configure_logging(fmt="json", stream=stream)

    get_logger().info("a", payload="x" * 10_000)
    logging.getLogger("redis").warning("b")

    assert len(stream.writes) == 2
    assert all(write.endswith("\n") and write.count("\n") == 1 for write in stream.writes)


def test_each_json_line_is_one_write_call_on_the_byte_buffer_of_a_utf8_stream() -> None:
    buffer = _RecordingBuffer()
    stream = io.TextIOWrapper(buffer, encoding="utf-8")
    configure_logging(fmt="json", stream=stream)

    get_logger().info("a", payload="x" * 10_000)
    get_logger().info("b")

    assert [json.loads(write)["event"] for write in buffer.writes] == ["a", "b"]


def test_lines_written_by_forked_children_to_one_file_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "worker.log"
    children, lines_each = 4, 300
    gate_read, gate_write = os.pipe()  # the children start logging together, so their writes overlap
    pids = []
    for child in range(children):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                configure_logging(fmt="json", stream=path.open("a", encoding="utf-8"))
                log = get_logger()
                os.read(gate_read, 1)
                for n in range(lines_each):
                    log.info("tick", child=child, n=n, payload=str(child) * 2_000)
            finally:
                os._exit(0)
        pids.append(pid)
    os.write(gate_write, b"g" * children)
    for pid in pids:
        os.waitpid(pid, 0)
    os.close(gate_read)
    os.close(gate_write)

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    assert len(lines) == children * lines_each
    assert all(line["payload"] == str(line["child"]) * 2_000 for line in lines)
