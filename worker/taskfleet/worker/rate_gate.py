"""Where a decoded message meets its task's rate limit (taskfleet.worker.rate_limiter): it is admitted, after at
most a short wait in the child, or deferred: published again for its slot, holding that slot in a header.

A deferred message owns the slot reserved for it, so when it comes back it does not reserve another (that would
waste the one it holds): it only waits for its turn among the starts (``RateLimiter.claim_start``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from taskfleet.message import Message
from taskfleet.task import TaskOptions
from taskfleet.worker.rate_limiter import MAX_START_WAIT_S
from taskfleet.worker.runtime_state import RuntimeState

#: The header a deferred message carries: the Unix time of the rate-limit slot reserved for it.
RATE_SLOT_HEADER = "taskfleet-rate-slot"


@dataclass(frozen=True, slots=True)
class Deferral:
    """Publish ``message`` (the same task id and retries, due at its slot) and ack the delivery."""

    message: Message
    delay_s: float


def admit(msg: Message, options: TaskOptions, runtime: RuntimeState) -> Message | Deferral:
    """The message to run now (without the slot header), having waited here for its turn if that was short; or
    its ``Deferral``. Beyond the limiter's horizon a deferred message holds no slot and asks again when back."""
    limiter = runtime.rate_limiter
    rate = runtime.limits.rate(msg.task, options) if limiter is not None else None
    if rate is None or limiter is None:
        return _without_slot(msg)
    holds_slot = RATE_SLOT_HEADER in msg.headers
    if not holds_slot:
        delay_s = limiter.reserve(msg.task, rate)
        if delay_s > 0:
            return _deferral(msg, delay_s, holds_slot=delay_s <= limiter.horizon_s)
    wait_s, claimed = limiter.claim_start(msg.task, rate, max_wait_s=MAX_START_WAIT_S)
    if not claimed:
        return _deferral(msg, wait_s, holds_slot=True)
    time.sleep(wait_s)
    return _without_slot(msg)


def _deferral(msg: Message, delay_s: float, *, holds_slot: bool) -> Deferral:
    slot_at = time.time() + delay_s
    headers = {k: v for k, v in msg.headers.items() if k != RATE_SLOT_HEADER}
    if holds_slot:
        headers[RATE_SLOT_HEADER] = slot_at
    return Deferral(msg.replace(eta=slot_at, headers=headers), delay_s)


def _without_slot(msg: Message) -> Message:
    if RATE_SLOT_HEADER not in msg.headers:
        return msg
    return msg.replace(headers={k: v for k, v in msg.headers.items() if k != RATE_SLOT_HEADER})
