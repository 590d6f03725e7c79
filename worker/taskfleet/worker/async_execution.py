"""One delivery of an ``async def`` task, run on its child's event loop (taskfleet.worker.async_runner): the
executor's steps (taskfleet.worker.executor: ``begin``, ``conclude``) around an awaited body instead of a called
one, so retries, results, follow-ups, hooks and signals are those of a sync task.

The body runs in the context of this delivery's asyncio task with ``task.request`` set, so ``self.request``,
``self.retry()`` and ``self.update_state()`` work in it (``update_state`` is a blocking backend write: a few
milliseconds during which the loop waits). A body past its hard time limit is cancelled and the task FAILS with
``TimeLimitExceeded`` (its retry policy applies as to any exception); one cancelled by a revoke with terminate is
REVOKED and acked, as the supervisor settles a terminated sync task.
"""

from __future__ import annotations

from taskfleet.errors import BrokerError, ResultError
from taskfleet.task import enter_request, leave_request
from taskfleet.worker.async_runner import AsyncRunner, Terminated
from taskfleet.worker.executor import Executor
from taskfleet.worker.outcomes import Admitted, Outcome


async def run_async_task(executor: Executor, runner: AsyncRunner, admitted: Admitted) -> Outcome:
    """Run ``admitted`` (an ``async def`` task) to its end on ``runner``'s loop and decide what becomes of its
    message. Nothing raises out of here but ``BaseException``s: a broker or backend error is ``Leave``."""
    try:
        return await _run(executor, runner, admitted)
    except (BrokerError, ResultError) as exc:
        return executor.left(admitted.delivery, exc, admitted.began)


async def _run(executor: Executor, runner: AsyncRunner, admitted: Admitted) -> Outcome:
    begun = executor.begin(admitted)
    msg = admitted.message
    try:
        token = enter_request(begun.request)  # the body's task copies this context: its task.request
        try:
            coro = admitted.task(*msg.args, **msg.kwargs)
            value = await runner.run_body(msg.id, coro, soft_limit_s=begun.soft_limit_s,
                                          hard_limit_s=begun.hard_limit_s)
        except Terminated:
            return executor.terminated(admitted)
        except Exception as exc:  # noqa: BLE001 - the task's own failure is data, not a worker error
            return executor.conclude(admitted, begun, error=exc)
        finally:
            leave_request(token)
        return executor.conclude(admitted, begun, value=value)
    finally:
        if begun.run:
            begun.run.postrun()
