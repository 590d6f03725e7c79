"""A revoked task id as the fleet store keeps it, so that a worker started or restarted later still honours it.

Stored with an expiry (default: the app's ``result_expires_s``): after it, the id is forgotten. A worker loads
every live revocation when it starts and hears new ones as control messages (``revoke``); it re-reads the store
every heartbeat, so one it missed while disconnected still reaches it.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass

from taskfleet.errors import ControlError, DecodeError

DEFAULT_TERMINATE_SIGNAL = "SIGTERM"


def signal_number(name: str | int) -> int:
    """``SIGTERM``, ``TERM``, ``15`` -> 15; ``ControlError`` for a name that is not a signal."""
    if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
        number = int(name)
        try:
            return int(signal.Signals(number))
        except ValueError as exc:
            raise ControlError(f"not a signal: {name!r}") from exc
    upper = str(name).upper()
    upper = upper if upper.startswith("SIG") else f"SIG{upper}"
    try:
        return int(signal.Signals[upper])
    except KeyError as exc:
        raise ControlError(f"not a signal: {name!r}") from exc


@dataclass(frozen=True, slots=True)
class Revocation:
    """``task_id`` must not run; with ``terminate``, a child running it gets ``signal`` (then SIGKILL after a
    grace). ``expires_at``: Unix seconds after which the store forgets it."""

    task_id: str
    expires_at: float
    terminate: bool = False
    signal: str = DEFAULT_TERMINATE_SIGNAL

    def to_json(self) -> bytes:
        return json.dumps({"task_id": self.task_id, "expires_at": self.expires_at, "terminate": self.terminate,
                           "signal": self.signal}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Revocation:
        try:
            data = json.loads(raw)
            return cls(task_id=str(data["task_id"]), expires_at=float(data["expires_at"]),
                       terminate=bool(data.get("terminate", False)),
                       signal=str(data.get("signal") or DEFAULT_TERMINATE_SIGNAL))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DecodeError(f"malformed revocation: {exc!r}") from exc
