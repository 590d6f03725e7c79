"""Celery's signals, by Celery's names, on blinker's ``Signal``: connect a receiver with
``@task_prerun.connect`` (any sender) or ``@task_prerun.connect_via(my_task)`` (one sender).

Taskfleet sends them with ``send``, which calls each receiver as Celery does, ``receiver(signal=..., sender=...,
**named)``, so a receiver is written ``def on_prerun(sender=None, task_id=None, **kwargs)`` and takes ``**kwargs``
for the arguments it does not name. A receiver that raises is logged (logger ``taskfleet.signals``, with the task
id where there is one) and the others still run: no receiver can fail a task, a worker or a publish; as in Celery,
where ``send`` catches too, this holds for ``before_task_publish`` as well.

What each signal is sent with, and where (see docs/progress-hooks-signals.md):

- ``worker_process_init`` (sender None): in each worker child, after the fork, before it fetches a message: open
  per-process resources (database connections) here.
- ``worker_process_shutdown`` (sender None; ``pid``, ``exitcode``): in a worker child that exits normally, before
  it closes its broker and backend connections.
- ``task_prerun`` (sender the task; ``task_id``, ``task``, ``args``, ``kwargs``), ``task_postrun`` (the same and
  ``retval``, ``state``; ``state`` None when the outcome could not be stored and the message will run again),
  ``task_success`` (``result``), ``task_failure`` (``task_id``, ``exception``, ``args``, ``kwargs``,
  ``traceback`` (the traceback object), ``einfo`` (``taskfleet.hooks.ExceptionInfo``)), ``task_retry``
  (``request`` (``taskfleet.task.Request``), ``reason`` (the ``Retry``), ``einfo``): in the worker child, around
  each run (``taskfleet.worker.lifecycle``).
- ``before_task_publish`` and ``after_task_publish`` (sender the task name; ``body``: the message as a dict,
  ``Message.to_dict()``, whose changes are not sent; ``headers``: the message's headers, which a
  ``before_task_publish`` receiver may change, to carry a trace context, say, and the message is sent with them;
  ``exchange`` ``""``; ``routing_key``: the queue): around each message ``delay``, ``send``, ``send_many``, a
  workflow and a worker's retry or workflow follow-up publish, on the publishing thread. ``after_task_publish``
  fires once the broker has the message, except for ``delay``/``send`` on RabbitMQ with windowed confirms (the
  default, docs/brokers.md): there it fires once the message is written, before its confirm, as Celery's does.

Checking for receivers is one dict lookup (``signal.receivers``), and nothing is built for a signal no receiver is
connected to.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import NamedSignal, Namespace

from taskfleet.message import Message

__all__ = [
    "after_task_publish",
    "before_task_publish",
    "send",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_retry",
    "task_success",
    "worker_process_init",
    "worker_process_shutdown",
]

log = logging.getLogger("taskfleet.signals")

_signals = Namespace()

worker_process_init = _signals.signal("worker_process_init", doc="In each worker child, before it fetches.")
worker_process_shutdown = _signals.signal("worker_process_shutdown", doc="In a worker child that exits normally.")
task_prerun = _signals.signal("task_prerun", doc="Before a task runs in a worker.")
task_postrun = _signals.signal("task_postrun", doc="After a task ran in a worker, whatever its outcome.")
task_success = _signals.signal("task_success", doc="After a task succeeded and its result was stored.")
task_failure = _signals.signal("task_failure", doc="After a task failed and its FAILURE was stored.")
task_retry = _signals.signal("task_retry", doc="After a task's retry was published and RETRY stored.")
before_task_publish = _signals.signal("before_task_publish", doc="Before a task message is published.")
after_task_publish = _signals.signal("after_task_publish", doc="After a task message is published.")


def send(signal: NamedSignal, sender: Any, /, **named: Any) -> None:
    """Call each receiver of ``signal`` for ``sender`` (and those for any sender) as Celery does:
    ``receiver(signal=signal, sender=sender, **named)``. An exception a receiver raises is logged and the next
    receiver runs."""
    if not signal.receivers:
        return
    for receiver in signal.receivers_for(sender):
        try:
            receiver(signal=signal, sender=sender, **named)
        except Exception:
            task_id = _task_id(sender, named)
            log.exception("receiver %r of signal %s raised%s; it is ignored", receiver, signal.name,
                          f" (task_id={task_id})" if task_id else "")


def _task_id(sender: Any, named: dict[str, Any]) -> str | None:
    """The id of the task a signal is about: named, in its request or message body, or the running task's."""
    found = named.get("task_id") or getattr(named.get("request"), "id", None)
    if found is None and isinstance(named.get("body"), dict):
        found = named["body"].get("id")
    if found is None:
        found = getattr(getattr(sender, "request", None), "id", None)
    return found if isinstance(found, str) else None


def announce_publish(message: Message) -> Message:
    """Send ``before_task_publish`` for ``message``; returns it with the headers the receivers left (the same
    message when they changed none)."""
    if not before_task_publish.receivers:
        return message
    headers = dict(message.headers)
    send(before_task_publish, message.task, body=message.to_dict(), exchange="", routing_key=message.queue,
         headers=headers)
    return message if headers == message.headers else message.replace(headers=headers)


def announce_published(message: Message) -> None:
    """Send ``after_task_publish`` for ``message``, once the broker has stored it."""
    if after_task_publish.receivers:
        send(after_task_publish, message.task, body=message.to_dict(), exchange="", routing_key=message.queue,
             headers=dict(message.headers))
