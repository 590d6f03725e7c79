"""The task ids a worker must not run, each until its expiry: its revocations (taskfleet.fleet.revocations).

The supervisor loads the stored revocations before it forks its children (so they start with them), re-reads them
every couple of seconds and hears new ones as ``revoke`` commands; it sends what is new to every child, whose
executor looks each decoded message up here. Bounded by expiry: ids past their ``expires_at`` are pruned as new
ones come in, so the set holds only the live revocations of the fleet store.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

#: Prune expired ids at most this often (seconds): a lookup stays a dict lookup.
_PRUNE_EVERY_S = 10.0


class RevokedSet:
    """Revoked task ids with their expiry (Unix seconds). Written by one thread, read by another: every write
    replaces or adds dict entries, which a concurrent lookup sees whole."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._pruned_at = 0.0

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, task_id: object) -> bool:
        until = self._until.get(task_id) if isinstance(task_id, str) else None
        return until is not None and until > time.time()

    def add(self, items: Iterable[tuple[str, float]], *, now: float | None = None) -> list[str]:
        """Add ``(task_id, expires_at)`` pairs; returns the ids that were not revoked before (a later expiry of a
        known id extends it, silently). Expired pairs are ignored."""
        now = time.time() if now is None else now
        new = []
        for task_id, expires_at in items:
            if expires_at <= now:
                continue
            known = self._until.get(task_id)
            if known is None or known <= now:
                new.append(task_id)
            if known is None or expires_at > known:
                self._until[task_id] = expires_at
        self.prune(now)
        return new

    def prune(self, now: float | None = None) -> None:
        """Forget the ids whose revocation expired (at most every ``_PRUNE_EVERY_S``)."""
        now = time.time() if now is None else now
        if now - self._pruned_at < _PRUNE_EVERY_S:
            return
        self._pruned_at = now
        for task_id in [t for t, until in self._until.items() if until <= now]:
            del self._until[task_id]

    def items(self) -> list[tuple[str, float]]:
        """The live ``(task_id, expires_at)`` pairs (what a child forked later must know)."""
        now = time.time()
        return [(t, until) for t, until in self._until.items() if until > now]
