"""Specification of serializer choice, settings validation and password masking (taskfleet.serializers,
taskfleet.settings, taskfleet.urls)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taskfleet import App, ConfigurationError
from taskfleet.message import Message
from taskfleet.serializers import get_serializer
from taskfleet.settings import (
    AppSettings,
    BackendSettings,
    BrokerSettings,
    PublishRetry,
    settings_from_env,
    validate_queue_name,
)
from taskfleet.urls import mask_secrets, mask_url

SECRET = "s3cr3t-Pa55"

# -- serializers -------------------------------------------------------------------------------------------------


def test_an_app_refuses_the_pickle_serializer_without_allow_pickle() -> None:
    with pytest.raises(ConfigurationError, match="allow_pickle=True"):
        App("t", serializer="pickle")


def test_an_app_refuses_to_accept_pickle_without_allow_pickle() -> None:
    with pytest.raises(ConfigurationError, match="allow_pickle=True"):
        App("t", accept_content={"json", "pickle"})


def test_an_app_uses_pickle_when_it_opts_in_and_accepts_it() -> None:
    app = App("t", serializer="pickle", allow_pickle=True, accept_content={"pickle"})
    message = Message(id="m1", task="t.add", args=(1, 2), created_at=1.0)

    data = message.encode(app.serializer)

    assert data.startswith(b"application/x-python-pickle\n")
    assert Message.decode(data, accept=app.settings.accept_content) == message


def test_an_app_refuses_a_serializer_it_does_not_accept() -> None:
    with pytest.raises(ConfigurationError, match="not in accept_content"):
        App("t", serializer="json", accept_content={"msgpack"})


@pytest.mark.parametrize("make", [lambda: App("t", serializer="yaml"), lambda: get_serializer("yaml")])
def test_an_unknown_serializer_is_a_configuration_error(make: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError, match="unknown serializer 'yaml'"):
        make()


def test_an_unknown_name_in_accept_content_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown serializer 'yaml'"):
        App("t", accept_content={"json", "yaml"})


# -- queue names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("-leading-dash", id="leading dash"),
        pytest.param(".hidden", id="leading dot"),
        pytest.param("has space", id="space"),
        pytest.param("a/b", id="slash"),
        pytest.param("a{b}", id="braces (a Redis hash tag)"),
        pytest.param("émails", id="non-ascii"),
        pytest.param("q" * 201, id="201 characters"),
        pytest.param(42, id="not a string"),
        pytest.param(
            "emails\n",
            id="trailing newline",
        ),
    ],
)
def test_an_invalid_queue_name_is_a_configuration_error(name: object) -> None:
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        validate_queue_name(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["q", "default", "emails.high", "tenant:42", "a_b-c", "Q9", "q" * 200])
def test_a_valid_queue_name_is_returned_unchanged(name: str) -> None:
    assert validate_queue_name(name) == name


def test_an_app_refuses_an_invalid_default_queue() -> None:
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        App("t", default_queue="no spaces please")


# -- other settings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"max_message_bytes": 1023}, "max_message_bytes"),
        ({"result_expires_s": 0}, "result_expires_s"),
    ],
)
def test_app_settings_refuse_out_of_range_values(changes: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AppSettings(**changes)  # type: ignore[arg-type]


def test_configuring_an_unknown_setting_is_a_type_error() -> None:
    app = App("t")

    with pytest.raises(TypeError):
        app.configure(brokr="memory://")


def test_an_app_without_a_result_backend_has_no_backend() -> None:
    assert App("t", broker="memory://").backend is None


# -- settings never show a password ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(AppSettings(broker_url=f"redis://user:{SECRET}@redis:6379/0",
                                 result_backend_url=f"rediss://:{SECRET}@redis:6380/1"), id="AppSettings"),
        pytest.param(BrokerSettings(url=f"redis://:{SECRET}@redis:6379/0"), id="BrokerSettings"),
        pytest.param(BackendSettings(url=f"redis://user:{SECRET}@redis:6379/1"), id="BackendSettings"),
    ],
)
def test_the_repr_of_settings_never_shows_a_password(settings: object) -> None:
    text = repr(settings)

    assert SECRET not in text
    assert "***" in text


def test_the_repr_of_an_app_never_shows_a_password() -> None:
    app = App("t", broker=f"redis://:{SECRET}@redis:6379/0", result_backend=f"redis://:{SECRET}@redis:6379/1")

    assert SECRET not in repr(app)


def test_the_missing_broker_error_does_not_show_the_backend_password() -> None:
    app = App("t", result_backend=f"redis://:{SECRET}@redis:6379/1")

    with pytest.raises(ConfigurationError) as caught:
        _ = app.broker

    assert SECRET not in str(caught.value)


# -- settings_from_env -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {}),
        ({"TASKFLEET_BROKER_URL": "redis://b:6379/0"}, {"broker": "redis://b:6379/0"}),
        ({"TASKFLEET_RESULT_BACKEND": "redis://b:6379/1"}, {"result_backend": "redis://b:6379/1"}),
        (
            {"TASKFLEET_BROKER_URL": "redis://b/0", "TASKFLEET_RESULT_BACKEND": "redis://b/1"},
            {"broker": "redis://b/0", "result_backend": "redis://b/1"},
        ),
        ({"TASKFLEET_BROKER_URL": ""}, {}),
        ({"CELERY_BROKER_URL": "redis://b/0", "PATH": "/usr/bin"}, {}),
    ],
)
def test_settings_from_env_maps_taskfleet_variables_to_app_arguments(
    environ: dict[str, str], expected: dict[str, str]
) -> None:
    assert settings_from_env(environ) == expected


def test_settings_from_env_output_can_build_an_app() -> None:
    app = App("t", **settings_from_env({"TASKFLEET_BROKER_URL": "memory://"}))

    assert app.settings.broker_url == "memory://"


# -- PublishRetry ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 2.0), (50, 2.0)],
)
def test_publish_retry_doubles_its_backoff_up_to_the_cap(attempt: int, delay: float) -> None:
    assert PublishRetry(backoff_s=0.1, backoff_max_s=2.0).delay_s(attempt) == pytest.approx(delay)


def test_publish_retry_without_backoff_does_not_wait() -> None:
    assert PublishRetry(backoff_s=0.0).delay_s(3) == 0.0


def test_publish_retry_caps_a_very_late_attempt_instead_of_overflowing() -> None:
    assert PublishRetry(max_attempts=2000, backoff_s=0.1, backoff_max_s=2.0).delay_s(1100) == 2.0


@pytest.mark.parametrize(
    "changes",
    [{"max_attempts": 0}, {"backoff_s": -0.1}, {"backoff_max_s": -1.0}],
)
def test_publish_retry_refuses_impossible_values(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        PublishRetry(**changes)  # type: ignore[arg-type]


# -- masking -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:pass@redis:6379/0", "redis://user:***@redis:6379/0"),
        ("redis://:pass@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://default:p%40ss@redis.example.com:6380/2", "rediss://default:***@redis.example.com:6380/2"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("redis://user@redis:6379/0", "redis://user@redis:6379/0"),
        ("memory://", "memory://"),
        ("redis://:@redis", "redis://:***@redis"),
        pytest.param(
            "redis://user:p@ss@redis:6379/0",
            "redis://user:***@redis:6379/0",
            id="password containing @",
        ),
    ],
)
def test_mask_url_replaces_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "cannot reach redis://app:one@a:6379/0 nor amqp://guest:two@b:5672//",
            "cannot reach redis://app:***@a:6379/0 nor amqp://guest:***@b:5672//",
        ),
        (
            "broker=redis://:one@a/0 backend=redis://:two@b/1",
            "broker=redis://:***@a/0 backend=redis://:***@b/1",
        ),
        ("no urls in this line: user:pass@host", "no urls in this line: user:pass@host"),
        ("", ""),
    ],
)
def test_mask_secrets_masks_every_url_in_a_text(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked
