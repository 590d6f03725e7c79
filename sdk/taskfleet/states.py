"""Task states, as stored in the result backend and shown by ``AsyncResult.state``.

The built-in states are the members of ``State``. A task may also store a state of its own with
``self.update_state(state="PROGRESS", meta={...})`` (any string, as in Celery): such a custom state is read back as
that plain ``str``, a known one as its ``State`` member (``to_state``), so ``result.state is State.SUCCESS`` holds
whatever stored it. Custom states are never final.
"""

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

_KNOWN: dict[str, State] = {state.value: state for state in State}


def to_state(name: str) -> State | str:
    """``name`` as its ``State`` member when it is a built-in state, else as the plain string (a custom state)."""
    return _KNOWN.get(name, name)
