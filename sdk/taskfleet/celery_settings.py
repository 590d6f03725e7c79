"""Celery's settings and what each one is in Taskfleet: the table behind ``config_from_object``'s explanations,
``taskfleet check`` and the settings table of docs/coming-from-celery.md (a test keeps that table complete).

Names are Celery's lower-case names (``task_serializer``); ``celery_name`` also reads the upper-case forms Django
projects use (``CELERY_TASK_SERIALIZER`` with ``namespace="CELERY"``) and the old pre-4.0 names (``BROKER_URL``,
``CELERY_RESULT_BACKEND``, ``CELERYD_CONCURRENCY``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CELERY_SETTINGS", "CelerySetting", "celery_name", "explain_celery_name"]


@dataclass(frozen=True, slots=True)
class CelerySetting:
    """One Celery setting: ``taskfleet`` is what to use instead (a ``TASKFLEET_*`` key, a flag, a task option), or
    None when Taskfleet has no equivalent; ``note`` says what differs or why it is not needed."""

    taskfleet: str | None
    note: str = ""

    @property
    def supported(self) -> bool:
        return self.taskfleet is not None


def _key(name: str, note: str = "") -> CelerySetting:
    return CelerySetting(f"TASKFLEET_{name}", note)


CELERY_SETTINGS: dict[str, CelerySetting] = {
    # connections
    "broker_url": _key("BROKER_URL"),
    "result_backend": _key("RESULT_BACKEND", "redis://, sqlite:/// or memory://; no database/RPC/S3 backends"),
    "broker_connection_retry_on_startup": CelerySetting(
        "taskfleet worker --broker-timeout S", "the worker retries for S seconds (default 30), then exits 4"),
    "broker_connection_timeout": _key("SOCKET_TIMEOUT_S", "one timeout, in seconds, for broker and backend"),
    "redis_socket_timeout": _key("SOCKET_TIMEOUT_S"),
    "broker_transport_options": CelerySetting(
        "TASKFLEET_VISIBILITY_TIMEOUT_S", "only visibility_timeout has an equivalent; it is a lease the worker "
        "renews, so it bounds redelivery after a crash, not how long a task may run"),
    "broker_pool_limit": CelerySetting(None, "one connection per process; nothing to size"),
    "broker_heartbeat": CelerySetting(None, "RabbitMQ heartbeats are managed by the broker client"),
    # messages
    "task_serializer": _key("SERIALIZER", "one serializer for messages and results; per call: serializer="),
    "result_serializer": _key("SERIALIZER", "one serializer for messages and results"),
    "accept_content": _key("ACCEPT_CONTENT", "pickle also needs TASKFLEET_ALLOW_PICKLE=True"),
    "result_accept_content": _key("ACCEPT_CONTENT"),
    "task_compression": _key("COMPRESSION", "gzip, zlib, bz2 or lzma; per call: compression="),
    "result_compression": CelerySetting(None, "results are stored uncompressed"),
    "task_protocol": CelerySetting(None, "Taskfleet's own message format (docs/protocol.md)"),
    "task_publish_retry": _key("PUBLISH_RETRY", "per call: apply_async(retry=False)"),
    "task_publish_retry_policy": _key("PUBLISH_RETRY", "a PublishRetry; per call: apply_async(retry_policy=)"),
    # queues and routing
    "task_default_queue": _key("DEFAULT_QUEUE"),
    "task_routes": _key("TASK_ROUTES", "routes win over the task decorator's queue (in Celery the task's wins)"),
    "task_queues": CelerySetting(None, "queues need no declaration: a worker consumes what -Q names"),
    "task_create_missing_queues": CelerySetting(None, "queues are always created on first use"),
    "task_default_priority": CelerySetting("@app.task(priority=)", "0-9; 9 runs first on every broker"),
    "task_default_queue_type": _key("TASK_DEFAULT_QUEUE_TYPE", "classic or quorum, RabbitMQ only; for every task "
                                    "queue the app declares, not only the default one; quorum refuses priorities"),
    "worker_detect_quorum_queues": CelerySetting(None, "never needed: Taskfleet's basic.qos is never global"),
    "task_queue_max_priority": CelerySetting(None, "every queue has priorities 0-9; 9 runs first (on Redis, Celery "
                                                   "runs 0 first)"),
    "task_default_exchange": CelerySetting(None, "no exchanges to configure"),
    "task_default_routing_key": CelerySetting(None, "no routing keys; route by queue name"),
    # results
    "result_expires": _key("RESULT_EXPIRES_S", "seconds (a timedelta is accepted); counted from each state write"),
    "result_extended": _key("RESULT_EXTENDED"),
    "task_ignore_result": CelerySetting("@app.task(ignore_result=True)", "per task, not app-wide"),
    "task_track_started": CelerySetting("@app.task(track_started=True)", "per task, not app-wide"),
    "task_store_errors_even_if_ignored": CelerySetting(None, "an ignored result stores nothing"),
    # execution
    "task_acks_late": CelerySetting(None, "always: a message is acked after its task ends (at-least-once)"),
    "task_reject_on_worker_lost": CelerySetting(
        None, "always: a killed worker's message runs again, up to TASKFLEET_MAX_DELIVERIES deliveries"),
    "task_acks_on_failure_or_timeout": CelerySetting(None, "a failed task's message is acked (its FAILURE stored)"),
    "task_time_limit": CelerySetting("@app.task(time_limit=)", "per task, seconds"),
    "task_soft_time_limit": CelerySetting("@app.task(soft_time_limit=)", "per task, seconds"),
    "task_annotations": CelerySetting(None, "set options on @app.task or with task_routes"),
    "task_always_eager": CelerySetting(None, "call the task directly (add(2, 2)) or use a memory:// broker in tests"),
    "task_eager_propagates": CelerySetting(None, "see task_always_eager"),
    "task_default_rate_limit": CelerySetting("@app.task(rate_limit=)", "per task, per worker; "
                                             "app.control.rate_limit changes it at runtime"),
    "imports": _key("INCLUDE"),
    "include": _key("INCLUDE"),
    "timezone": _key("TIMEZONE", "the zone crontab schedules are read in"),
    "enable_utc": CelerySetting(None, "times are always UTC; TASKFLEET_TIMEZONE applies to crontab schedules"),
    # worker
    "worker_concurrency": CelerySetting("taskfleet worker -c N", "default: the CPUs the process may use (affinity "
                                        "and cgroup limit), not the host's count"),
    "worker_prefetch_multiplier": CelerySetting("taskfleet worker --prefetch N", "the most messages per child fetch, "
                                                "not a multiplier: fewer for slow tasks, and the unstarted ones go "
                                                "back after 0.5 s of waiting"),
    "worker_max_tasks_per_child": CelerySetting("taskfleet worker --max-tasks-per-child N"),
    "worker_max_memory_per_child": CelerySetting("taskfleet worker --max-memory-per-child MB",
                                                 "megabytes, where Celery counts kilobytes"),
    "worker_pool": CelerySetting(None, "prefork only"),
    "worker_send_task_events": _key("WORKER_SEND_TASK_EVENTS", "or taskfleet worker -E; events go to a capped "
                                    "stream in the broker (TASKFLEET_EVENTS_MAX_LEN), read by taskfleet events"),
    "task_send_sent_event": _key("TASK_SEND_SENT_EVENT", "send_many emits one batch of task-sent per call"),
    "worker_hijack_root_logger": CelerySetting(None, "the worker logs through structlog; --log-format, --log-level"),
    "worker_log_format": CelerySetting("taskfleet worker --log-format json",
                                       "or console, or auto (console on a terminal)"),
    "worker_redirect_stdouts": CelerySetting("taskfleet worker --no-redirect-stdouts",
                                             "on by default: one log event per printed line, with the task's id"),
    "worker_redirect_stdouts_level": CelerySetting(None, "stdout lines log at info, stderr lines at warning"),
    "worker_cancel_long_running_tasks_on_connection_loss": CelerySetting(
        None, "a running task finishes; its message is redelivered only if its lease lapses"),
    # beat
    "beat_schedule": _key("BEAT_SCHEDULE", "Celery's dict of entries is accepted as it is"),
    "beat_scheduler": CelerySetting(None, "beat keeps its state in the broker; run any number of replicas"),
    "beat_max_loop_interval": CelerySetting(None, "beat sleeps until the next tick"),
}

#: Pre-4.0 upper-case names that are not ``CELERY_`` + the new name.
_OLD_NAMES = {
    "BROKER_URL": "broker_url", "BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "CELERY_RESULT_BACKEND": "result_backend", "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_IGNORE_RESULT": "task_ignore_result", "CELERY_ROUTES": "task_routes", "CELERY_IMPORTS": "imports",
    "CELERY_TIMEZONE": "timezone", "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERYD_CONCURRENCY": "worker_concurrency", "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child", "CELERYBEAT_SCHEDULE": "beat_schedule",
}


def celery_name(key: str) -> str | None:
    """The Celery setting ``key`` is, in any of Celery's spellings (``task_serializer``, ``CELERY_TASK_SERIALIZER``,
    ``CELERYD_CONCURRENCY``), or None when it is not one Taskfleet knows."""
    if key in _OLD_NAMES:
        return _OLD_NAMES[key]
    name = key.lower()
    if name in CELERY_SETTINGS:
        return name
    if name.startswith("celery_") and name[len("celery_"):] in CELERY_SETTINGS:
        return name[len("celery_"):]
    return None


def explain_celery_name(key: str) -> str | None:
    """One sentence on what Celery's setting ``key`` is in Taskfleet, or None when ``key`` is not Celery's."""
    name = celery_name(key)
    if name is None:
        return None
    setting = CELERY_SETTINGS[name]
    if setting.taskfleet is None:
        return f"Taskfleet has no equivalent ({setting.note})"
    return f"use {setting.taskfleet}" + (f" ({setting.note})" if setting.note else "")
