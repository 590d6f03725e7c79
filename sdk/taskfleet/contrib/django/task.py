"""``DjangoTask``: a ``Task`` that can wait for the Django database transaction to commit before it is sent.

A view that creates a row and sends a task about it inside ``transaction.atomic()`` races the worker: the task may
run before the row is committed (and see nothing), or after a rollback (and see a row that never existed).
``task.delay_on_commit(...)`` registers the send with Django's ``transaction.on_commit``: it happens once the
outermost transaction commits, never when it (or the savepoint it was called in) rolls back, and at once when no
transaction is open (autocommit). Celery 5.4's ``DjangoTask`` has the same two methods, with the same meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import transaction

from taskfleet.task import Task

if TYPE_CHECKING:
    from taskfleet.canvas.primitives import Node

R = TypeVar("R")


class DjangoTask(Task[R]):
    """A ``Task`` with ``delay_on_commit`` and ``apply_async_on_commit``. Make it every task's class with
    ``App("proj", task_cls=DjangoTask)``, or one task's with ``@app.task(base=DjangoTask)``.

    Both return None, as Celery's do: the message does not exist until the transaction commits, so there is no
    result to hand back yet. To follow the task, choose its id: ``apply_async_on_commit(args, task_id=some_id)``,
    then ``app.AsyncResult(some_id)``."""

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay(*args, **kwargs)`` once the current transaction of the default database commits (at once
        outside a transaction); nothing is sent if it rolls back. Every keyword goes to the task: for another
        database or send options, use ``apply_async_on_commit``."""
        def send() -> None:
            self.delay(*args, **kwargs)

        self._on_commit(send, "delay", using=None, robust=False)

    def apply_async_on_commit(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        using: str | None = None,
        robust: bool = False,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        link: Node | list[Node] | None = None,
        link_error: Node | list[Node] | None = None,
        serializer: str | None = None,
        compression: str | None = None,
        retry: bool = True,
        retry_policy: Mapping[str, Any] | None = None,
    ) -> None:
        """``apply_async(args, kwargs, ...)`` once the current transaction on database ``using`` (default: the
        default database) commits, at once when none is open; nothing is sent if it rolls back. The send options
        are ``apply_async``'s; a ``countdown`` counts from the commit.

        ``robust`` is ``transaction.on_commit``'s: False (the default) lets an error of the send (broker down,
        arguments that cannot be encoded) propagate from the commit, after the data is committed, so the caller
        sees that the task was not sent (and, as Django does then, the transaction's later on-commit callbacks are
        skipped); True logs it (logger ``django.db.backends.base``) and carries on with the next callback."""
        def send() -> None:
            self.apply_async(args, kwargs, countdown=countdown, eta=eta, expires=expires, priority=priority,
                             queue=queue, task_id=task_id, headers=headers, link=link, link_error=link_error,
                             serializer=serializer, compression=compression, retry=retry, retry_policy=retry_policy)

        self._on_commit(send, "apply_async", using=using, robust=robust)

    def _on_commit(self, send: Callable[[], None], method: str, *, using: str | None, robust: bool) -> None:
        # Django names the callback by its __qualname__ when a robust one fails: say which task it was.
        send.__qualname__ = send.__name__ = f"{self.name}.{method}"
        transaction.on_commit(send, using=using, robust=robust)
