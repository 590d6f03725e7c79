"""The chord join as a result backend keeps it: what a header task records, and what the backend answers.

One backend operation per header task (``ResultBackend.chord_part``) records its part by header index (the first
record of an index counts; a task that runs twice is counted once) and, in the same operation, decides:

- ``FIRE``: this part completed the header with every part a success. Its index is recorded as the one that fires,
  and the answer carries every part's result in header order: the caller sends the body, then calls
  ``chord_fired``.
- ``FAIL``: this part is a failure and the first one: its index is recorded as the one that fails the chord, and
  the answer carries the failure: the caller stores the chord's failure and sends its errbacks, then calls
  ``chord_fired``.
- ``WAIT``: parts are still missing (or this one was already counted and someone else fires).
- ``DONE``: the chord already fired or failed, by another part or by this one with ``chord_fired`` called.

A part that fired (or failed) the chord and is recorded again before ``chord_fired`` (its task was delivered again
after a crash) gets ``FIRE`` (``FAIL``) again: firing is redone until it is recorded as done, by that part only. The
join expires with the results (``result_expires_s``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from taskfleet.errors import DecodeError
from taskfleet.serializers import Serializer

_SUCCESS = b"S"
_FAILURE = b"F"


@dataclass(frozen=True, slots=True)
class ChordPart:
    """One header task's outcome: ``ok`` and its result, or not ``ok`` and the failure (a mapping with ``task_id``,
    ``task``, ``exc_type``, ``exc_message``, ``exc_args`` and ``traceback``)."""

    ok: bool
    value: Any

    def encode(self, serializer: Serializer) -> bytes:
        """``S`` or ``F``, then the value with ``serializer`` (backends store parts as these bytes)."""
        return (_SUCCESS if self.ok else _FAILURE) + serializer.dumps(self.value)

    @classmethod
    def decode(cls, data: bytes, serializer: Serializer) -> ChordPart:
        flag, body = data[:1], data[1:]
        if flag not in (_SUCCESS, _FAILURE):
            raise DecodeError(f"malformed chord part {data[:32]!r}")
        return cls(flag == _SUCCESS, serializer.loads(body))


class JoinAction(StrEnum):
    """What the part just recorded asks of its worker (module docstring)."""

    WAIT = "wait"
    FIRE = "fire"
    FAIL = "fail"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class JoinDecision:
    """``action``; with ``FIRE`` every part's result in header order (``results``), with ``FAIL`` the failure of the
    part that failed the chord (``failure``)."""

    action: JoinAction
    results: list[Any] = field(default_factory=list)
    failure: Any = None


WAIT = JoinDecision(JoinAction.WAIT)
DONE = JoinDecision(JoinAction.DONE)


def decide(*, index: int, size: int, mine: ChordPart, count: int, fired_by: int | None, fired_kind: str | None,
           done: bool) -> tuple[JoinAction, str | None]:
    """The decision for part ``index`` (recorded as ``mine``; ``count`` parts recorded in all) given who fired the
    chord so far (``fired_by``, with ``fired_kind`` ``"fire"`` or ``"fail"``) and whether that firing is ``done``.
    Returns the action and, when this part claims the firing now, its kind (the caller records ``index`` and it in
    the same operation). The Redis backend's Lua script (``taskfleet.backends.redis_joins``) follows the same
    rules."""
    if fired_by is None:
        if not mine.ok:
            return JoinAction.FAIL, "fail"
        if count >= size:
            return JoinAction.FIRE, "fire"
        return JoinAction.WAIT, None
    if fired_by == index and not done:
        return (JoinAction.FIRE if fired_kind == "fire" else JoinAction.FAIL), None
    return (JoinAction.DONE if done else JoinAction.WAIT), None


def decision(action: JoinAction, parts: dict[int, ChordPart], index: int) -> JoinDecision:
    """The ``JoinDecision`` of ``action`` for part ``index``, given every recorded part by index."""
    if action is JoinAction.FIRE:
        return JoinDecision(action, [parts[i].value for i in sorted(parts)])
    if action is JoinAction.FAIL:
        return JoinDecision(action, failure=parts[index].value)
    return DONE if action is JoinAction.DONE else WAIT
