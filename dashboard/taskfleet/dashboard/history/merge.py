"""How a task's row follows from its events, whatever order they arrive in (pure: no I/O).

The state is the latest attempt's: an event carrying a higher ``retries`` than the row's attempt starts a new one;
within an attempt a later stage wins (sent < received < started < retried < the ends), so a late ``task-sent``
never overwrites SUCCESS. Events without ``retries`` (started, the ends) belong to the row's current attempt, unless
they happened before it was received (an earlier attempt's, arriving late: they never win); anything newer than a
RETRY is the next attempt's. Other fields fill in: the first non-empty value stays,
except the worker, result and error, which are the winning event's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskfleet.dashboard import model

#: Event type -> the state it means.
STATE_OF = {
    "task-sent": model.SENT, "task-received": model.RECEIVED, "task-started": model.STARTED,
    "task-succeeded": model.SUCCESS, "task-failed": model.FAILURE, "task-retried": model.RETRY,
    "task-revoked": model.REVOKED, "task-dead-lettered": model.DEAD_LETTERED,
}
#: Stage of each state within one attempt: a later stage wins over an earlier one whatever the arrival order.
RANK = {model.SENT: 0, model.RECEIVED: 1, model.STARTED: 2, model.RETRY: 3, model.SUCCESS: 4, model.FAILURE: 4,
        model.REVOKED: 4, model.DEAD_LETTERED: 4}
ENDS = frozenset({model.SUCCESS, model.FAILURE, model.REVOKED, model.DEAD_LETTERED})

#: The tasks table's columns, in order (``rowid`` aside): the TaskEntry fields, then the merge's own bookkeeping.
COLUMNS = (
    "task_id", "name", "state", "queue", "worker", "args", "kwargs", "result", "exception", "traceback", "retries",
    "root_id", "parent_id", "eta", "sent_at", "received_at", "started_at", "finished_at", "runtime_s",
    "first_seen_at", "updated_at", "attempt", "state_ts",
)
_FILL = ("name", "queue", "args", "kwargs", "root_id", "parent_id", "eta")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def new_row(task_id: str, timestamp: float) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(task_id=task_id, state=model.SENT, retries=0, first_seen_at=timestamp, updated_at=timestamp,
               attempt=-1, state_ts=float("-inf"))
    return row


def _earlier_attempt(row: Mapping[str, Any], timestamp: float) -> bool:
    """Whether an event without ``retries`` happened before the current attempt was received: it is an earlier
    attempt's (two children's batches reach the stream in either order)."""
    received: float | None = row["received_at"]
    return row["attempt"] > 0 and received is not None and timestamp < received


def _wins(row: Mapping[str, Any], state: str, attempt: int | None, timestamp: float) -> bool:
    current_attempt: int = row["attempt"]
    if attempt is not None and attempt != current_attempt:
        return attempt > current_attempt
    current: str = row["state"]
    if current_attempt < 0:  # nothing decided yet
        return True
    if attempt is None and _earlier_attempt(row, timestamp):
        return False
    if attempt is None and current == model.RETRY and timestamp > row["state_ts"]:
        return True  # the next attempt's started or end, before its received arrived
    return (RANK[state], timestamp) >= (RANK[current], row["state_ts"])


def apply(row: dict[str, Any], kind: str, timestamp: float, fields: Mapping[str, Any]) -> str | None:
    """Fold one task event into ``row`` (changed in place); the event's timeline ``detail``."""
    state = STATE_OF[kind]
    attempt = _int(fields.get("retries"))
    for column in _FILL:
        if row[column] is None:
            row[column] = _text(fields.get(column))
    row["first_seen_at"] = min(row["first_seen_at"], timestamp)
    row["updated_at"] = max(row["updated_at"], timestamp)
    if attempt is not None:
        row["retries"] = max(row["retries"], attempt)
    worker = _text(fields.get("worker"))
    if _wins(row, state, attempt, timestamp):
        if attempt is not None:
            row["attempt"] = attempt
        elif row["attempt"] < 0:
            row["attempt"] = 0
        elif row["state"] == model.RETRY and state != model.RETRY:
            row["attempt"] += 1
        row["state"], row["state_ts"] = state, timestamp
        if worker is not None:
            row["worker"] = worker
        if state in ENDS or state == model.RETRY:
            row["exception"] = _text(fields.get("exception")) or _text(fields.get("reason"))
            row["traceback"] = _text(fields.get("traceback"))
            row["result"] = _text(fields.get("result"))
    if state == model.RETRY:
        if attempt is None:
            attempt = max(row["attempt"], 0) - (1 if _earlier_attempt(row, timestamp) else 0)
        row["retries"] = max(row["retries"], attempt + 1)
    _times(row, kind, timestamp, fields)
    return _detail(kind, fields)


def _times(row: dict[str, Any], kind: str, timestamp: float, fields: Mapping[str, Any]) -> None:
    if kind == "task-sent":
        row["sent_at"] = timestamp if row["sent_at"] is None else min(row["sent_at"], timestamp)
    elif kind == "task-received":
        row["received_at"] = max(row["received_at"] or timestamp, timestamp)
    elif kind == "task-started":
        row["started_at"] = max(row["started_at"] or timestamp, timestamp)
    elif row["state"] in ENDS and STATE_OF[kind] == row["state"]:
        row["finished_at"] = timestamp
        runtime = _float(fields.get("runtime"))
        if runtime is not None:
            row["runtime_s"] = runtime


def _detail(kind: str, fields: Mapping[str, Any]) -> str | None:
    if kind == "task-succeeded":
        return _text(fields.get("result"))
    if kind in ("task-failed", "task-retried"):
        return _text(fields.get("exception"))
    if kind in ("task-revoked", "task-dead-lettered"):
        reason, exception = _text(fields.get("reason")), _text(fields.get("exception"))
        return f"{reason}: {exception}" if reason and exception else reason or exception
    return None
