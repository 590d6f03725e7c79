"""Where ``taskfleet.worker.logging`` meets structlog, which it imports only here and only when it must:
``import structlog`` imports rich (a dependency, for the CLI) and asyncio, some 5-10 MiB in every worker process.
The console format renders with structlog's ``ConsoleRenderer``; a line logged before ``configure_logging`` goes
through structlog as it always did; and when the process uses structlog anyway (the app's tasks may), structlog's
own loggers are routed to the same processors and output (``route``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskfleet.worker.log_processors import EventDict, Processor
from taskfleet.worker.log_writer import WRITER, LineWriter, NamedWriter

__all__ = ["console_renderer", "log_unconfigured", "route"]


def console_renderer(*, colors: bool) -> Processor:
    """structlog's human-readable renderer (imports structlog)."""
    from structlog.dev import ConsoleRenderer

    return ConsoleRenderer(colors=colors)


def log_unconfigured(name: str | None, context: Mapping[str, Any], method: str, event: str, kw: EventDict) -> None:
    """A line logged before ``configure_logging`` goes where structlog sends it (by default a console line on
    stdout), as it did when these loggers were structlog's own."""
    import structlog

    logger = structlog.get_logger() if name is None else structlog.get_logger(name)
    getattr(logger.bind(**context), method)(event, **kw)


def _writer_factory(name: str | None = None, *_args: Any) -> LineWriter | NamedWriter:
    """structlog's logger factory when routed: ``structlog.get_logger(name)`` writes as ``get_logger(name)`` does."""
    return WRITER if name is None else NamedWriter(name)


def route(processors: list[Processor], min_level: int) -> None:
    """Make ``structlog.get_logger()`` loggers run ``processors`` (this very list, so changing it in place reaches
    them) at ``min_level`` and write to ``WRITER``. Imports structlog: call it only when the process already has."""
    import structlog

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        context_class=dict,
        logger_factory=_writer_factory,
        cache_logger_on_first_use=True,
    )
