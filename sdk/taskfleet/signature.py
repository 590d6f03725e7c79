"""``Signature``: a task call written down but not sent (task name, arguments, send options).

``report.s(2024, region="eu")`` makes one; beat sends one per tick. It is frozen and plain data (``to_dict`` /
``from_dict``), so it can be stored, compared and, later, composed by canvas primitives (chain, group, chord)
without changing its shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from taskfleet.errors import ConfigurationError
from taskfleet.message import MAX_PRIORITY, MIN_PRIORITY
from taskfleet.settings import validate_queue_name

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.result import AsyncResult


@dataclass(frozen=True, kw_only=True, slots=True)
class Signature:
    """One task call: ``task`` (its registered name), ``args``, ``kwargs`` and the send options ``queue``,
    ``priority`` (0-9) and ``expires`` (seconds after sending, as in ``apply_async(expires=)``; None: never). None
    options fall back to the task's own (or the app's default queue)."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    expires: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ConfigurationError("a signature needs a task name")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        if self.queue is not None:
            validate_queue_name(self.queue)
        if self.priority is not None and not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise ConfigurationError(f"priority must be {MIN_PRIORITY}-{MAX_PRIORITY}, got {self.priority}")
        if self.expires is not None and self.expires <= 0:
            raise ConfigurationError("expires must be > 0 seconds")

    def set(self, *, queue: str | None = None, priority: int | None = None,
            expires: float | None = None) -> Signature:
        """A copy with these send options changed (None keeps the current value)."""
        return dataclasses.replace(
            self, queue=self.queue if queue is None else queue,
            priority=self.priority if priority is None else priority,
            expires=self.expires if expires is None else expires,
        )

    def send_options(self, app: App) -> tuple[str | None, int, float | None]:
        """The queue (None: the app's default), priority and ``expires`` (seconds) this call is sent with through
        ``app``: its own, else those of its task when ``app`` has it registered."""
        task = app.tasks.get(self.task)
        queue = self.queue or (task.queue if task is not None else None)
        priority = self.priority if self.priority is not None else (task.options.priority if task else 0)
        expires = self.expires if self.expires is not None else (task.options.expires if task else None)
        return queue, priority, expires

    def apply_async(self, app: App, *, task_id: str | None = None,
                    headers: Mapping[str, Any] | None = None) -> AsyncResult:
        """Send this call through ``app`` (by name: the task's code need not be imported here)."""
        queue, priority, expires = self.send_options(app)
        return app.send(self.task, self.args, self.kwargs, queue=queue, priority=priority, expires=expires,
                        task_id=task_id, headers=headers)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "args": list(self.args), "kwargs": dict(self.kwargs), "queue": self.queue,
                "priority": self.priority, "expires": self.expires}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Signature:
        unknown = set(raw) - {"task", "args", "kwargs", "queue", "priority", "expires"}
        if unknown:
            raise ConfigurationError(f"unknown signature fields: {sorted(unknown)}")
        return cls(task=raw["task"], args=tuple(raw.get("args") or ()), kwargs=dict(raw.get("kwargs") or {}),
                   queue=raw.get("queue"), priority=raw.get("priority"), expires=raw.get("expires"))

    def __repr__(self) -> str:
        parts = [*(repr(a) for a in self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"{self.task}({', '.join(parts)})"
