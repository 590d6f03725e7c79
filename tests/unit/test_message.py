"""Specification of the task message (taskfleet.message): its wire format and what decoding refuses."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from taskfleet.errors import ContentTypeRefused, DecodeError
from taskfleet.message import PROTOCOL_VERSION, Message
from taskfleet.serializers import SERIALIZERS

JSON_ONLY = frozenset({"json"})


def _message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "abc123",
        "task": "billing.charge",
        "args": (42, "eur"),
        "kwargs": {"note": "monthly"},
        "queue": "billing",
        "priority": 5,
        "eta": 1_700_000_100.0,
        "expires": 1_700_000_900.0,
        "retries": 1,
        "root_id": "root1",
        "parent_id": "parent1",
        "headers": {"trace": "t-1"},
        "created_at": 1_700_000_000.0,
    }
    fields.update(changes)
    return Message(**fields)


def _envelope(**changes: Any) -> dict[str, Any]:
    """A valid envelope as a dict, with ``changes`` applied (a value of ``...`` deletes the key)."""
    raw = _message().to_dict()
    for key, value in changes.items():
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def _json_bytes(raw: object) -> bytes:
    return b"application/json\n" + orjson.dumps(raw)


# -- round trip -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_message_decodes_to_an_equal_message_after_encoding(serializer: str) -> None:
    message = _message()

    data = message.encode(SERIALIZERS[serializer])

    assert Message.decode(data, accept=frozenset({serializer})) == message


@pytest.mark.parametrize(
    ("serializer", "content_type"),
    [("json", b"application/json"), ("msgpack", b"application/x-msgpack")],
)
def test_encoded_bytes_start_with_the_content_type_line(serializer: str, content_type: bytes) -> None:
    data = _message().encode(SERIALIZERS[serializer])

    assert data.startswith(content_type + b"\n")


def test_the_envelope_carries_the_protocol_version() -> None:
    assert _message().to_dict()["v"] == PROTOCOL_VERSION


def test_defaults_survive_a_round_trip() -> None:
    message = Message(id="m1", task="app.ping", created_at=1.0)

    decoded = Message.decode(message.encode(SERIALIZERS["json"]), accept=JSON_ONLY)

    assert decoded == message
    assert decoded.queue == "default"


# -- broker id ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "broker_id"),
    [(0, "abc123"), (1, "abc123:1"), (7, "abc123:7")],
)
def test_the_broker_id_is_the_task_id_then_id_colon_attempt(retries: int, broker_id: str) -> None:
    assert _message(retries=retries).broker_id == broker_id


# -- decode refuses ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"v": 1}', id="no newline at all"),
        pytest.param(b"", id="empty"),
        pytest.param(b"x" * 65 + b"\n{}", id="content type longer than 64 bytes"),
    ],
)
def test_decode_refuses_bytes_without_a_content_type_line(data: bytes) -> None:
    with pytest.raises(DecodeError, match="no content-type line"):
        Message.decode(data, accept=JSON_ONLY)


def test_decode_refuses_an_unknown_content_type() -> None:
    with pytest.raises(DecodeError, match="unknown content type 'text/yaml'"):
        Message.decode(b"text/yaml\nid: 1", accept=JSON_ONLY)


def test_decode_refuses_pickle_when_it_is_not_accepted() -> None:
    data = b"application/x-python-pickle\n" + b"cos\nsystem\n(S'echo pwned'\ntR."

    with pytest.raises(ContentTypeRefused, match="not accepted"):
        Message.decode(data, accept=JSON_ONLY)


def test_a_refused_content_type_is_a_decode_error() -> None:
    assert issubclass(ContentTypeRefused, DecodeError)


def test_decode_refuses_an_accepted_serializer_that_is_not_in_the_accept_list() -> None:
    data = _message().encode(SERIALIZERS["msgpack"])

    with pytest.raises(ContentTypeRefused):
        Message.decode(data, accept=JSON_ONLY)


@pytest.mark.parametrize(
    ("data", "accept"),
    [
        pytest.param(b"application/json\n{not json", JSON_ONLY, id="json"),
        pytest.param(b"application/x-msgpack\n\xc1\xc1\xc1", frozenset({"msgpack"}), id="msgpack"),
    ],
)
def test_decode_refuses_a_body_that_does_not_deserialize(data: bytes, accept: frozenset[str]) -> None:
    with pytest.raises(DecodeError, match="cannot deserialize"):
        Message.decode(data, accept=accept)


@pytest.mark.parametrize("envelope", [[1, 2, 3], "a string", 42, None])
def test_decode_refuses_an_envelope_that_is_not_a_mapping(envelope: object) -> None:
    with pytest.raises(DecodeError, match="not a mapping"):
        Message.decode(_json_bytes(envelope), accept=JSON_ONLY)


@pytest.mark.parametrize("version", [0, 2, "1", None, ...])
def test_decode_refuses_an_unknown_protocol_version(version: object) -> None:
    with pytest.raises(DecodeError, match="unsupported protocol version"):
        Message.decode(_json_bytes(_envelope(v=version)), accept=JSON_ONLY)


@pytest.mark.parametrize("field", ["id", "task"])
@pytest.mark.parametrize("value", [..., "", None, 7], ids=["missing", "empty", "null", "a number"])
def test_decode_refuses_a_missing_or_empty_id_or_task(field: str, value: object) -> None:
    with pytest.raises(DecodeError, match=f"field '{field}' must be a non-empty string"):
        Message.decode(_json_bytes(_envelope(**{field: value})), accept=JSON_ONLY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("args", {"a": 1}),
        ("args", "12"),
        ("kwargs", [1, 2]),
        ("headers", "x"),
        ("priority", True),
        ("priority", "5"),
        ("priority", 1.5),
        ("retries", False),
        ("eta", "2024-01-01T00:00:00Z"),
        ("eta", True),
        ("expires", "soon"),
    ],
)
def test_decode_refuses_fields_of_the_wrong_type(field: str, value: object) -> None:
    with pytest.raises(DecodeError, match=f"field '{field}' must be"):
        Message.decode(_json_bytes(_envelope(**{field: value})), accept=JSON_ONLY)


@pytest.mark.parametrize("priority", [-1, 10, 100])
def test_decode_refuses_a_priority_outside_0_to_9(priority: int) -> None:
    with pytest.raises(DecodeError, match="priority must be 0-9"):
        Message.decode(_json_bytes(_envelope(priority=priority)), accept=JSON_ONLY)


def test_decode_refuses_negative_retries() -> None:
    with pytest.raises(DecodeError, match="retries must be >= 0"):
        Message.decode(_json_bytes(_envelope(retries=-1)), accept=JSON_ONLY)


def test_decode_accepts_an_integer_eta_as_seconds() -> None:
    message = Message.decode(_json_bytes(_envelope(eta=1_700_000_100)), accept=JSON_ONLY)

    assert message.eta == 1_700_000_100.0


def test_decode_treats_null_optional_collections_as_empty() -> None:
    raw = _envelope(args=None, kwargs=None, headers=None)

    message = Message.decode(_json_bytes(raw), accept=JSON_ONLY)

    assert (message.args, dict(message.kwargs), dict(message.headers)) == ((), {}, {})


# -- construction ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("priority", [-1, 10])
def test_a_priority_outside_0_to_9_is_refused_when_building_a_message(priority: int) -> None:
    with pytest.raises(ValueError, match="priority must be 0-9"):
        _message(priority=priority)


@pytest.mark.parametrize("priority", [0, 9])
def test_priorities_0_and_9_are_allowed(priority: int) -> None:
    assert _message(priority=priority).priority == priority


def test_negative_retries_are_refused_when_building_a_message() -> None:
    with pytest.raises(ValueError, match="retries must be >= 0"):
        _message(retries=-1)


def test_replace_returns_a_changed_copy_and_leaves_the_original_alone() -> None:
    original = _message(retries=0)

    copy = original.replace(retries=1)

    assert (original.retries, copy.retries) == (0, 1)
    assert copy.id == original.id


# -- timing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires", "now", "expired"),
    [
        (None, 1e12, False),
        (100.0, 99.9, False),
        (100.0, 100.0, True),
        (100.0, 100.1, True),
    ],
)
def test_is_expired_once_now_reaches_expires(expires: float | None, now: float, expired: bool) -> None:
    assert _message(expires=expires).is_expired(now=now) is expired


def test_is_expired_uses_the_clock_when_no_time_is_given() -> None:
    assert _message(expires=1.0).is_expired() is True
    assert _message(expires=1e12).is_expired() is False


@pytest.mark.parametrize(
    ("eta", "now", "delay"),
    [
        (None, 100.0, 0.0),
        (150.0, 100.0, 50.0),
        (100.0, 100.0, 0.0),
        (50.0, 100.0, 0.0),
    ],
)
def test_delay_s_is_the_time_until_eta_and_never_negative(eta: float | None, now: float, delay: float) -> None:
    assert _message(eta=eta).delay_s(now=now) == delay
