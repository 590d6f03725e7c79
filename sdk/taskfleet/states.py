"""Task states, as stored in the result backend and shown by ``AsyncResult.state``."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Lifecycle of a task. ``READY_STATES`` are final."""

    PENDING = "PENDING"  # unknown to the backend: queued, not yet started, or never sent
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"  # expired before it ran, or revoked


PENDING = State.PENDING
STARTED = State.STARTED
RETRY = State.RETRY
SUCCESS = State.SUCCESS
FAILURE = State.FAILURE
REVOKED = State.REVOKED

READY_STATES = frozenset({State.SUCCESS, State.FAILURE, State.REVOKED})
