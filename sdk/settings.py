"""Typed, frozen settings grouped by concern. Env vars are read only by ``from_env`` at entrypoints."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from taskfleet.errors import ConfigurationError
from taskfleet.schedules import zone
from taskfleet.serializers import JSON, validate_accept
from taskfleet.urls import mask_url

DEFAULT_QUEUE = "default"
#: Lease of a fetched message. A healthy worker renews it every third of this, so it bounds how long a message
#: held by a SIGKILLed worker waits before redelivery, not how long a task may run.
DEFAULT_VISIBILITY_TIMEOUT_S = 30.0
#: A message delivered this many times without an ack (its worker died each time) goes to the dead-letter queue.
DEFAULT_MAX_DELIVERIES = 10
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_RESULT_EXPIRES_S = 24 * 3600.0
DEFAULT_PUBLISH_MAX_ATTEMPTS = 5
DEFAULT_PUBLISH_BACKOFF_S = 0.1
DEFAULT_PUBLISH_BACKOFF_MAX_S = 2.0
DEFAULT_SOCKET_TIMEOUT_S = 10.0
#: Time zone of crontab schedules (an IANA name).
DEFAULT_TIMEZONE = "UTC"

ENV_BROKER_URL = "TASKFLEET_BROKER_URL"
ENV_RESULT_BACKEND = "TASKFLEET_RESULT_BACKEND"
ENV_BROKER_MANAGEMENT_URL = "TASKFLEET_BROKER_MANAGEMENT_URL"

_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


def validate_queue_name(name: str) -> str:
    """Queue names are 1-200 chars of letters, digits, ``._:-``; anything else is a ``ConfigurationError``."""
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
        raise ConfigurationError(f"invalid queue name {name!r}: use 1-200 letters, digits, '.', '_', ':', '-'")
    return name


@dataclass(frozen=True, kw_only=True)
class PublishRetry:
    """How a publisher retries when the broker connection fails: exponential backoff, then
    ``BrokerConnectionError``."""

    max_attempts: int = DEFAULT_PUBLISH_MAX_ATTEMPTS
    backoff_s: float = DEFAULT_PUBLISH_BACKOFF_S
    backoff_max_s: float = DEFAULT_PUBLISH_BACKOFF_MAX_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("publish_retry.max_attempts must be >= 1")
        if self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ConfigurationError("publish_retry backoffs must be >= 0")

    def delay_s(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based)."""
        return float(min(self.backoff_max_s, self.backoff_s * (2.0 ** min(attempt - 1, 62))))


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """What a broker implementation needs; built by ``AppSettings.broker_settings()``."""

    url: str
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S
    publish_retry: PublishRetry = field(default_factory=PublishRetry)
    #: RabbitMQ only: the management HTTP API (``http://user:pass@host:15672``), used to count in-flight messages
    #: and list queues. Without it ``queue_depth`` can count only ready messages.
    management_url: str | None = None

    def __post_init__(self) -> None:
        if self.visibility_timeout_s < 1:
            raise ConfigurationError("visibility_timeout_s must be >= 1")
        if self.max_deliveries < 1:
            raise ConfigurationError("max_deliveries must be >= 1")

    def __repr__(self) -> str:  # never print a password
        return f"BrokerSettings(url={mask_url(self.url)!r}, visibility_timeout_s={self.visibility_timeout_s})"


@dataclass(frozen=True, kw_only=True)
class BackendSettings:
    """What a result backend needs."""

    url: str
    result_expires_s: float = DEFAULT_RESULT_EXPIRES_S
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S
    serializer: str = JSON
    accept_content: frozenset[str] = frozenset({JSON})

    def __repr__(self) -> str:
        return f"BackendSettings(url={mask_url(self.url)!r}, result_expires_s={self.result_expires_s})"


@dataclass(frozen=True, kw_only=True)
class AppSettings:
    """Everything an ``App`` is configured with. Build it through ``App(...)`` keyword arguments."""

    broker_url: str | None = None
    broker_management_url: str | None = None
    result_backend_url: str | None = None
    default_queue: str = DEFAULT_QUEUE
    serializer: str = JSON
    accept_content: frozenset[str] = frozenset({JSON})
    allow_pickle: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    result_expires_s: float = DEFAULT_RESULT_EXPIRES_S
    publish_retry: PublishRetry = field(default_factory=PublishRetry)
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S
    timezone: str = DEFAULT_TIMEZONE  # IANA name; crontab fields of periodic tasks are read in it

    def __post_init__(self) -> None:
        validate_queue_name(self.default_queue)
        zone(self.timezone)
        validate_accept(self.serializer, self.accept_content, allow_pickle=self.allow_pickle)
        if self.max_message_bytes < 1024:
            raise ConfigurationError("max_message_bytes must be >= 1024")
        if self.result_expires_s <= 0:
            raise ConfigurationError("result_expires_s must be > 0")

    def replace(self, **changes: object) -> AppSettings:
        """A copy with ``changes``; unknown names raise ``TypeError``."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def broker_settings(self) -> BrokerSettings:
        if not self.broker_url:
            raise ConfigurationError(
                f"no broker configured: pass App(broker='redis://host:6379/0') or set {ENV_BROKER_URL} "
                "at your entrypoint (taskfleet never picks a default broker)"
            )
        return BrokerSettings(
            url=self.broker_url,
            visibility_timeout_s=self.visibility_timeout_s,
            max_deliveries=self.max_deliveries,
            socket_timeout_s=self.socket_timeout_s,
            publish_retry=self.publish_retry,
            management_url=self.broker_management_url,
        )

    def backend_settings(self) -> BackendSettings | None:
        if not self.result_backend_url:
            return None
        return BackendSettings(
            url=self.result_backend_url,
            result_expires_s=self.result_expires_s,
            socket_timeout_s=self.socket_timeout_s,
            serializer=self.serializer,
            accept_content=self.accept_content,
        )

    def __repr__(self) -> str:
        broker = mask_url(self.broker_url) if self.broker_url else None
        backend = mask_url(self.result_backend_url) if self.result_backend_url else None
        return f"AppSettings(broker_url={broker!r}, result_backend_url={backend!r}, serializer={self.serializer!r})"


def settings_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``App`` keyword arguments that ``environ`` sets (call this at an entrypoint only):
    ``TASKFLEET_BROKER_URL`` -> ``broker``, ``TASKFLEET_BROKER_MANAGEMENT_URL`` -> ``broker_management_url``,
    ``TASKFLEET_RESULT_BACKEND`` -> ``result_backend``."""
    found: dict[str, str] = {}
    if environ.get(ENV_BROKER_URL):
        found["broker"] = environ[ENV_BROKER_URL]
    if environ.get(ENV_BROKER_MANAGEMENT_URL):
        found["broker_management_url"] = environ[ENV_BROKER_MANAGEMENT_URL]
    if environ.get(ENV_RESULT_BACKEND):
        found["result_backend"] = environ[ENV_RESULT_BACKEND]
    return found
