"""Typed, frozen settings grouped by concern. Env vars are read only by ``from_env`` at entrypoints."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskfleet.compression import check_compression
from taskfleet.errors import ConfigurationError
from taskfleet.fleet.events import DEFAULT_EVENTS_MAX_LEN
from taskfleet.schedules import zone
from taskfleet.serializers import JSON, validate_accept
from taskfleet.urls import mask_url

DEFAULT_QUEUE = "default"
#: Lease of a fetched message. A healthy worker renews it every third of this, so it bounds how long a message
#: held by a SIGKILLed worker waits before redelivery, not how long a task may run.
DEFAULT_VISIBILITY_TIMEOUT_S = 30.0
#: A message delivered this many times without an ack (its worker died each time) goes to the dead-letter queue.
DEFAULT_MAX_DELIVERIES = 10
#: Largest encoded message (envelope and arguments, after compression: the bytes on the wire), in bytes; at least
#: 1024. Publishing a larger one raises ``MessageTooLarge`` and sends nothing; a worker dead-letters a larger
#: delivery without decoding it.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
#: Largest body a compressed message may inflate to, in bytes (16 MiB); at least 1024. A worker stops inflating a
#: body as soon as it passes this and dead-letters the message (a decompression bomb); a publisher refuses to
#: compress a larger one (``MessageTooLarge``).
DEFAULT_MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024
#: How long a task's stored state is kept, counted from its latest write (each of STARTED, RETRY, SUCCESS... starts
#: the clock again); afterwards the record is gone and the task reads as PENDING. Must be > 0.
DEFAULT_RESULT_EXPIRES_S = 24 * 3600.0
DEFAULT_PUBLISH_MAX_ATTEMPTS = 5
DEFAULT_PUBLISH_BACKOFF_S = 0.1
DEFAULT_PUBLISH_BACKOFF_MAX_S = 2.0
#: How long one network operation on the broker or result backend may wait for the server before it counts as a
#: lost connection (``BrokerConnectionError``): Redis's connect and read timeout (a blocking fetch waits at most half
#: of it), RabbitMQ's socket, connection set-up and management API timeout (one broker call waits up to three times
#: it, at least 30 s). SQLite and ``memory://`` ignore it.
DEFAULT_SOCKET_TIMEOUT_S = 10.0
#: Time zone of crontab schedules (an IANA name).
DEFAULT_TIMEZONE = "UTC"

ENV_BROKER_URL = "TASKFLEET_BROKER_URL"
ENV_RESULT_BACKEND = "TASKFLEET_RESULT_BACKEND"
ENV_BROKER_MANAGEMENT_URL = "TASKFLEET_BROKER_MANAGEMENT_URL"
#: Celery's ``task_default_queue_type`` as an environment variable (``classic`` or ``quorum``): what a TaskQueue's
#: ``spec.broker.rabbitmq.queueType`` sets on its workers.
ENV_TASK_DEFAULT_QUEUE_TYPE = "TASKFLEET_TASK_DEFAULT_QUEUE_TYPE"
#: RabbitMQ queue types a task queue can be declared as (``AppSettings.task_default_queue_type``).
CLASSIC = "classic"
QUORUM = "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)

_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


def validate_queue_name(name: str) -> str:
    """Queue names are 1-200 chars of letters, digits, ``._:-``; anything else is a ``ConfigurationError``."""
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
        raise ConfigurationError(f"invalid queue name {name!r}: use 1-200 letters, digits, '.', '_', ':', '-'")
    return name


@dataclass(frozen=True, kw_only=True)
class PublishRetry:
    """How a publisher retries when the broker connection fails: exponential (or, with ``backoff_step_s``,
    linear) backoff, then ``BrokerConnectionError``. ``App(publish_retry=)`` for every publish of an app,
    ``apply_async(retry=, retry_policy=)`` for one (``for_call``)."""

    #: Attempts in all, the first included, before the publish raises ``BrokerConnectionError``; at least 1 (1: no
    #: retry). Only connection errors are retried; any other broker error is raised at once. The defaults give up
    #: after 5 attempts and about 1.5 s of waiting.
    max_attempts: int = DEFAULT_PUBLISH_MAX_ATTEMPTS
    #: Wait before the first retry, in seconds, doubled for each further one (0.1, 0.2, 0.4, ...); at least 0.
    backoff_s: float = DEFAULT_PUBLISH_BACKOFF_S
    #: Cap on the wait before any one retry, in seconds; at least 0.
    backoff_max_s: float = DEFAULT_PUBLISH_BACKOFF_MAX_S
    #: None (default): the wait doubles for each retry. A number of seconds (at least 0): it grows by that much
    #: instead, linearly, as Celery's ``retry_policy`` does (``backoff_s``, ``backoff_s + step``, ...).
    backoff_step_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("publish_retry.max_attempts must be >= 1")
        if self.backoff_s < 0 or self.backoff_max_s < 0 or (self.backoff_step_s or 0) < 0:
            raise ConfigurationError("publish_retry backoffs must be >= 0")

    @classmethod
    def from_policy(cls, policy: Mapping[str, Any]) -> PublishRetry:
        """Celery's ``retry_policy`` dict as a ``PublishRetry``; Celery's defaults fill the keys it leaves out:

        - ``max_retries`` (default 3): retries *after* the first attempt, so ``max_attempts = max_retries + 1``;
          ``None`` (Celery: retry forever) is a ``ConfigurationError``: a publish must end.
        - ``interval_start`` (default 0 s): ``backoff_s``, the wait before the first retry.
        - ``interval_step`` (default 0.2 s): ``backoff_step_s``, added to the wait for each further retry.
        - ``interval_max`` (default 0.2 s): ``backoff_max_s``, the cap on any one wait.

        An unknown key is a ``ConfigurationError``."""
        unknown = sorted(set(policy) - _POLICY_KEYS)
        if unknown:
            raise ConfigurationError(f"unknown retry_policy key(s) {unknown}; the keys are {sorted(_POLICY_KEYS)}")
        retries = policy.get("max_retries", 3)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retry_policy max_retries must be a whole number >= 0 (a publish must end), "
                                     f"got {retries!r}")
        return cls(max_attempts=retries + 1, backoff_s=float(policy.get("interval_start", 0.0)),
                   backoff_step_s=float(policy.get("interval_step", 0.2)),
                   backoff_max_s=float(policy.get("interval_max", 0.2)))

    @classmethod
    def for_call(cls, retry: bool = True, retry_policy: Mapping[str, Any] | None = None) -> PublishRetry | None:
        """The retry policy of one call's publish (``apply_async(retry=, retry_policy=)``), or None for the app's
        ``publish_retry``: ``retry=False`` is one attempt (no retry), else a ``retry_policy`` is read by
        ``from_policy``."""
        if not retry:
            return cls(max_attempts=1)
        return None if retry_policy is None else cls.from_policy(retry_policy)

    def delay_s(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based)."""
        if self.backoff_step_s is not None:
            return float(min(self.backoff_max_s, self.backoff_s + self.backoff_step_s * (attempt - 1)))
        return float(min(self.backoff_max_s, self.backoff_s * (2.0 ** min(attempt - 1, 62))))


#: The keys of Celery's ``retry_policy`` (``PublishRetry.from_policy``).
_POLICY_KEYS = frozenset({"max_retries", "interval_start", "interval_step", "interval_max"})


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """What a broker implementation needs; built by ``AppSettings.broker_settings()``."""

    #: Where the broker is; its scheme picks the implementation: ``redis://``, ``rediss://``, ``unix://``, ``amqp://``,
    #: ``amqps://``, ``sqlite:///path`` or ``memory://`` (one process, tests only); any other raises
    #: ``ConfigurationError``. Logs and reprs show it with the password masked.
    url: str
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S
    #: How ``enqueue`` retries when the connection fails (Redis, RabbitMQ, SQLite), then raises
    #: ``BrokerConnectionError``.
    publish_retry: PublishRetry = field(default_factory=PublishRetry)
    #: RabbitMQ only: the management HTTP API (``http://user:pass@host:15672``), used to count in-flight messages
    #: and list queues. Without it ``queue_depth`` can count only ready messages.
    management_url: str | None = None
    #: RabbitMQ only: ``classic`` or ``quorum``, the type of every task queue (and dead-letter queue) this broker
    #: declares; see ``AppSettings.task_default_queue_type``. Other brokers ignore it.
    queue_type: str = CLASSIC

    def __post_init__(self) -> None:
        check_queue_type(self.queue_type)
        if self.visibility_timeout_s < 1:
            raise ConfigurationError("visibility_timeout_s must be >= 1")
        if self.max_deliveries < 1:
            raise ConfigurationError("max_deliveries must be >= 1")

    def __repr__(self) -> str:  # never print a password
        return f"BrokerSettings(url={mask_url(self.url)!r}, visibility_timeout_s={self.visibility_timeout_s})"


@dataclass(frozen=True, kw_only=True)
class BackendSettings:
    """What a result backend needs."""

    #: Where results are stored; its scheme picks the implementation: ``redis://``, ``rediss://``, ``unix://``,
    #: ``sqlite:///path`` or ``memory://`` (one process, tests only); any other raises ``ConfigurationError``.
    url: str
    result_expires_s: float = DEFAULT_RESULT_EXPIRES_S
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S
    #: Serializer each stored result record is encoded with (``json``, ``msgpack`` or ``pickle``).
    serializer: str = JSON
    #: Serializers a stored record may be encoded with to be read back; reading one encoded otherwise raises
    #: ``DecodeError``.
    accept_content: frozenset[str] = frozenset({JSON})

    def __repr__(self) -> str:
        return f"BackendSettings(url={mask_url(self.url)!r}, result_expires_s={self.result_expires_s})"


@dataclass(frozen=True, kw_only=True)
class AppSettings:
    """Everything an ``App`` is configured with. Build it through ``App(...)`` keyword arguments."""

    #: Broker URL (``redis://``, ``amqp://``, ``sqlite:///path``...; see ``BrokerSettings.url``). None: using the
    #: broker (sending a task, starting a worker) fails with ``ConfigurationError``; taskfleet never picks a default.
    broker_url: str | None = None
    #: RabbitMQ management API URL, passed on as ``BrokerSettings.management_url``; other brokers ignore it.
    broker_management_url: str | None = None
    #: Result backend URL (``redis://``, ``sqlite:///path``...; see ``BackendSettings.url``). None: no task state is
    #: stored, and reading an ``AsyncResult`` raises ``ConfigurationError``.
    result_backend_url: str | None = None
    #: Queue of tasks that name none (``@app.task(queue=)``) and of ``app.send()`` without ``queue=``; also the queue
    #: ``taskfleet worker`` consumes without ``-Q``. 1-200 letters, digits, ``._:-``.
    default_queue: str = DEFAULT_QUEUE
    #: Serializer this app encodes messages and results with: ``json``, ``msgpack`` (``taskfleet[msgpack]``) or
    #: ``pickle`` (needs ``allow_pickle``). Must be in ``accept_content``.
    serializer: str = JSON
    #: Serializers this app's workers and results accept: a message in another one is dead-lettered unrun, a result
    #: in another one raises ``DecodeError``.
    accept_content: frozenset[str] = frozenset({JSON})
    #: Opt-in to pickle: without it, naming ``pickle`` in ``serializer`` or ``accept_content`` raises
    #: ``ConfigurationError``, since unpickling a message can run arbitrary code on the worker.
    allow_pickle: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: Codec this app compresses messages with: ``gzip``, ``zlib``, ``bz2`` or ``lzma`` (``bzip2`` and ``xz`` are
    #: read as ``bz2`` and ``lzma``), or None (default) for none; an unknown name is a ``ConfigurationError``.
    #: ``apply_async(compression=)`` and routes choose per call; workers read every codec, whatever this says.
    compression: str | None = None
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    result_expires_s: float = DEFAULT_RESULT_EXPIRES_S
    #: How publishing (``delay``, ``send``, a worker's retries) retries when the broker connection fails.
    publish_retry: PublishRetry = field(default_factory=PublishRetry)
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S
    timezone: str = DEFAULT_TIMEZONE  # IANA name; crontab fields of periodic tasks are read in it
    #: Celery's ``result_extended``: the worker also stores each task's ``args``, ``kwargs`` and ``queue`` in its
    #: result record (``AsyncResult.args``/``.kwargs``/``.queue``; its name and retries are always stored). Off by
    #: default: arguments can be large or sensitive, and every stored state would carry them.
    result_extended: bool = False
    #: Celery's ``worker_send_task_events``: this app's workers emit task events (received, started, succeeded,
    #: failed, retried, revoked, dead-lettered) to the app's event stream, as ``taskfleet worker -E`` does. Off by
    #: default: each worker child then makes one more broker call per 250 ms while it works (docs/events.md; the cost
    #: is in docs/benchmarks.md).
    worker_send_task_events: bool = False
    #: Celery's ``task_send_sent_event``: publishers (``delay``, ``apply_async``, ``send``, ``send_many``,
    #: workflows) emit ``task-sent`` for every message they publish, one broker call per publish or batch.
    task_send_sent_event: bool = False
    events_max_len: int = DEFAULT_EVENTS_MAX_LEN
    #: Celery's ``task_default_queue_type``, RabbitMQ only: ``classic`` (default) or ``quorum``, the type of every
    #: task queue this app declares (Celery's applies to its default queue). Quorum queues are replicated across a
    #: RabbitMQ cluster, but have no priorities (sending with ``priority`` > 0 raises ``ConfigurationError``) and a
    #: classic queue cannot become one in place: every app and worker using a queue must agree (docs/brokers.md).
    task_default_queue_type: str = CLASSIC

    def __post_init__(self) -> None:
        check_queue_type(self.task_default_queue_type)
        validate_queue_name(self.default_queue)
        zone(self.timezone)
        validate_accept(self.serializer, self.accept_content, allow_pickle=self.allow_pickle)
        if self.max_message_bytes < 1024:
            raise ConfigurationError("max_message_bytes must be >= 1024")
        if self.max_decompressed_bytes < 1024:
            raise ConfigurationError("max_decompressed_bytes must be >= 1024")
        object.__setattr__(self, "compression", check_compression(self.compression))
        if self.result_expires_s <= 0:
            raise ConfigurationError("result_expires_s must be > 0")
        if self.events_max_len < 1:
            raise ConfigurationError("events_max_len must be >= 1")

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
            queue_type=self.task_default_queue_type,
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


def check_queue_type(queue_type: str) -> str:
    """``queue_type`` when it is a RabbitMQ queue type Taskfleet declares (``QUEUE_TYPES``), else
    ``ConfigurationError``."""
    if queue_type not in QUEUE_TYPES:
        raise ConfigurationError(f"task_default_queue_type must be one of {', '.join(QUEUE_TYPES)}, "
                                 f"not {queue_type!r}")
    return queue_type


def settings_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``App`` keyword arguments that ``environ`` sets (call this at an entrypoint only):
    ``TASKFLEET_BROKER_URL`` -> ``broker``, ``TASKFLEET_BROKER_MANAGEMENT_URL`` -> ``broker_management_url``,
    ``TASKFLEET_RESULT_BACKEND`` -> ``result_backend``, ``TASKFLEET_TASK_DEFAULT_QUEUE_TYPE`` ->
    ``task_default_queue_type``."""
    found: dict[str, str] = {}
    if environ.get(ENV_BROKER_URL):
        found["broker"] = environ[ENV_BROKER_URL]
    if environ.get(ENV_BROKER_MANAGEMENT_URL):
        found["broker_management_url"] = environ[ENV_BROKER_MANAGEMENT_URL]
    if environ.get(ENV_RESULT_BACKEND):
        found["result_backend"] = environ[ENV_RESULT_BACKEND]
    if environ.get(ENV_TASK_DEFAULT_QUEUE_TYPE):
        found["task_default_queue_type"] = environ[ENV_TASK_DEFAULT_QUEUE_TYPE]
    return found
