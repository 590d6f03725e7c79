"""The settings dataclasses that docs/configuration.md documents, in order, and the code that builds each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setter:
    """Where a dataclass is built, and how its inputs are shown: ``kind`` is ``param`` (a keyword of the enclosing
    function, shown with ``template``), ``field`` (its own keywords: the user builds the dataclass, or passes each
    field to a function that does), ``cli`` (``args.X`` flags and ``ENV_*`` variables) or ``self`` (another
    settings object's field, shown with ``template``)."""

    module: str
    kind: str
    template: str = "{}"


@dataclass(frozen=True)
class Section:
    """One table of docs/configuration.md: the fields of ``cls`` (in ``module``), under ``title`` and ``intro``."""

    title: str
    module: str
    cls: str
    intro: str
    setters: tuple[Setter, ...] = ()


SECTIONS = (
    Section(
        "App settings (`AppSettings`)", "taskfleet.settings", "AppSettings",
        "Everything an `App` is configured with: keyword arguments of `App(name, ...)`, or of `app.configure(...)`"
        " before use (which also takes `broker=` and `result_backend=`; an unknown name raises `TypeError`). "
        "`App(accept_content=)` defaults to `{serializer}`.",
        (Setter("taskfleet.app", "param", "`App({}=)`"),),
    ),
    Section(
        "Publish retries (`PublishRetry`)", "taskfleet.settings", "PublishRetry",
        "How a publisher retries when the broker connection fails: exponential backoff (`backoff_s` doubled per "
        "attempt, or grown by `backoff_step_s`, capped at `backoff_max_s`), then `BrokerConnectionError`. "
        "Pass `App(publish_retry=PublishRetry(...))`; one call's own: `apply_async(retry=False)` or "
        "`apply_async(retry_policy={...})` (Celery's keys, `PublishRetry.from_policy`).",
        (Setter("", "field", "`PublishRetry({}=)`"),),
    ),
    Section(
        "Task options (`TaskOptions`)", "taskfleet.task", "TaskOptions",
        "Per-task settings from `@app.task(...)` (and `@app.periodic(...)`, which takes `name`, `queue` and "
        "`priority`). Times are in seconds; an unknown option raises `TypeError`.",
        (Setter("", "field", "`@app.task({}=)`"),),  # @app.task takes every field: name= and **TaskOptionsKwargs
    ),
    Section(
        "Worker settings (`WorkerSettings`)", "taskfleet.worker.settings", "WorkerSettings",
        "How one `taskfleet worker` process tree runs; built from its flags (see [cli.md](cli.md#taskfleet-worker)).",
        (Setter("taskfleet.worker.worker_command", "cli"),),
    ),
    Section(
        "Beat settings (`BeatSettings`)", "taskfleet.worker.beat", "BeatSettings",
        "How one beat replica (`taskfleet beat`, or `taskfleet worker --beat`) runs. Only the lease has a flag; "
        "the other fields are fixed at their defaults.",
        (Setter("taskfleet.worker.beat_command", "cli"), Setter("taskfleet.worker.worker_command", "cli")),
    ),
    Section(
        "Operator settings (`OperatorSettings`)", "taskfleet.operator.runner", "OperatorSettings",
        "How `taskfleet operator` runs; built from its flags (see [cli.md](cli.md#taskfleet-operator)).",
        (Setter("taskfleet.operator.operator_command", "cli"),),
    ),
    Section(
        "Broker settings (`BrokerSettings`)", "taskfleet.settings", "BrokerSettings",
        "What a broker implementation receives. Not set directly: `AppSettings.broker_settings()` builds it from "
        "the app's settings.",
        (Setter("taskfleet.settings", "self", "`AppSettings.{}`"),),
    ),
    Section(
        "Result backend settings (`BackendSettings`)", "taskfleet.settings", "BackendSettings",
        "What a result backend receives. Not set directly: `AppSettings.backend_settings()` builds it from the "
        "app's settings (none when `result_backend_url` is unset).",
        (Setter("taskfleet.settings", "self", "`AppSettings.{}`"),),
    ),
)
