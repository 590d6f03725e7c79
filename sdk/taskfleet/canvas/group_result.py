"""``GroupResult``: the caller's handle on a group's results, in the group's order (Celery's name and meaning)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from taskfleet.errors import ConfigurationError, ResultTimeout
from taskfleet.result import AsyncResult

if TYPE_CHECKING:
    from taskfleet.app import App
    from taskfleet.backends.base import ResultBackend
    from taskfleet.fleet.protocol import ControlReply


class GroupResult:
    """The results of group ``id``, in the group's order: each an ``AsyncResult``, or a ``GroupResult`` for a member
    that ends in a group. ``save()`` stores the list in the result backend so ``GroupResult.restore(id, app=app)``
    can rebuild it in another process."""

    def __init__(self, id: str, results: Sequence[AsyncResult | GroupResult], *, app: App,
                 parent: AsyncResult | GroupResult | None = None) -> None:
        self.id = id
        self.results = list(results)
        self.app = app
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupResult) and other.id == self.id and other.results == self.results

    def __hash__(self) -> int:
        return hash(self.id)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult | GroupResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult | GroupResult:
        return self.results[index]

    @property
    def children(self) -> list[AsyncResult | GroupResult]:
        """The results (Celery's other name for them)."""
        return self.results

    def get(self, timeout: float | None = None, *, propagate: bool = True) -> list[Any]:
        """Wait up to ``timeout`` seconds in all (None: forever) for every result and return them in the group's
        order. With ``propagate`` the first failed one (in order) raises its exception; without it the exception
        takes its place in the list. ``ResultTimeout`` when time runs out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                values.append(result.get(timeout=remaining, propagate=propagate))
            except ResultTimeout:
                raise ResultTimeout(f"group {self.id} not ready after {timeout}s") from None
        return values

    join = get

    async def get_async(self, timeout: float | None = None, *, propagate: bool = True) -> list[Any]:
        """``get`` for asyncio callers (``AsyncResult.get_async``): every member awaited at once, through the app's
        one result waiter; the same list, the same first failure in the group's order, the same ``ResultTimeout``.
        Whatever is still waiting when it returns or raises is cancelled."""
        import asyncio  # here: sync callers never load it

        waits = [asyncio.ensure_future(result.get_async(propagate=propagate)) for result in self.results]
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return [await wait for wait in waits]
        except TimeoutError:
            if not scope.expired():
                raise
            raise ResultTimeout(f"group {self.id} not ready after {timeout}s") from None
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def ready(self) -> bool:
        """True once every result is ready (SUCCESS, FAILURE or REVOKED)."""
        return all(result.ready() for result in self.results)

    def waiting(self) -> bool:
        """True while some result is not ready."""
        return not self.ready()

    def successful(self) -> bool:
        """True when every result succeeded."""
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        """True when some result failed."""
        return any(result.failed() for result in self.results)

    def completed_count(self) -> int:
        """How many results succeeded (Celery's meaning of completed)."""
        return sum(1 for result in self.results if result.successful())

    def save(self) -> GroupResult:
        """Store the ids of the results in the result backend (for ``result_expires_s``); returns self."""
        self._backend().save_group(self.id, {"results": [_entry(r) for r in self.results]})
        return self

    @classmethod
    def restore(cls, id: str, *, app: App) -> GroupResult | None:
        """The group result ``save()`` stored under ``id``, or None when there is none (never saved, expired)."""
        backend = app.backend
        if backend is None:
            raise ConfigurationError("no result backend configured: pass App(result_backend='redis://...')")
        data = backend.restore_group(id)
        if data is None:
            return None
        return cls(id, [_result(entry, app) for entry in data.get("results", [])], app=app)

    def forget(self) -> None:
        """Delete the stored results and the saved group."""
        for result in self.results:
            result.forget()
        self._backend().forget_group(self.id)

    def revoke(self, *, terminate: bool = False, signal: str = "SIGTERM", expires_s: float | None = None,
               reply: bool = False, timeout: float = 1.0) -> list[ControlReply]:
        """Revoke every part of the group (``AsyncResult.revoke``), in one request: each member, the earlier steps
        of a member that is a chain, and the header and body of a member that is a chord."""
        return self.app.control.revoke(part_ids(self), terminate=terminate, signal=signal, expires_s=expires_s,
                                       reply=reply, timeout=timeout)

    def _backend(self) -> ResultBackend:
        backend = self.app.backend
        if backend is None:
            raise ConfigurationError("no result backend configured: pass App(result_backend='redis://...')")
        return backend


def part_ids(result: AsyncResult | GroupResult) -> list[str]:
    """The task ids of every part of ``result``: a group's members', each with what ran before it inside the member
    (a chain's earlier steps, a chord's header: the ``parent`` links ``result_of`` sets), in order."""
    if isinstance(result, GroupResult):
        return [task_id for member in result.results for task_id in _with_parents(member)]
    return [result.id]


def _with_parents(member: AsyncResult | GroupResult) -> list[str]:
    ids: list[str] = []
    node: AsyncResult | GroupResult | None = member
    while node is not None:
        ids[:0] = part_ids(node)
        node = node.parent
    return ids


def _entry(result: AsyncResult | GroupResult) -> Any:
    if isinstance(result, GroupResult):
        return {"group": result.id, "results": [_entry(r) for r in result.results]}
    return result.id


def _result(entry: Any, app: App) -> AsyncResult | GroupResult:
    if isinstance(entry, dict):
        return GroupResult(entry["group"], [_result(e, app) for e in entry.get("results", [])], app=app)
    return AsyncResult(entry, app=app)
