"""What the control commands change in a running worker and its children read as they run tasks: the revoked ids,
the runtime limit overrides and the shared rate limiter.

The supervisor makes one before forking its children (each inherits it, the rate limiter's shared memory
included) and sends changes over each child's pipe (taskfleet.worker.events: ``Revoke``, ``Limits``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskfleet.worker.rate_limiter import RateLimiter
from taskfleet.worker.revoked import RevokedSet
from taskfleet.worker.task_limits import TaskLimits


@dataclass
class RuntimeState:
    """The revoked task ids, the limits in force and the rate limiter (None: rate limits are not applied, e.g. an
    executor run in-process by tests)."""

    revoked: RevokedSet = field(default_factory=RevokedSet)
    limits: TaskLimits = field(default_factory=TaskLimits)
    rate_limiter: RateLimiter | None = None
