"""Running the operator: kopf settings chosen on purpose, the metrics server, and the kopf main loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import kopf
from prometheus_client import start_http_server

from taskfleet.errors import ConfigurationError
from taskfleet.operator.autoscaler import Autoscaler
from taskfleet.operator.handlers import build_registry
from taskfleet.operator.kube import Kube, load_config
from taskfleet.operator.metrics import OperatorMetrics

#: Where kopf keeps handler progress and the last handled spec (annotations: the status schema is strict).
ANNOTATION_PREFIX = "taskfleet.io"


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """How ``taskfleet operator`` runs."""

    #: Watch only these namespaces (``--namespace``, repeatable) ...
    namespaces: tuple[str, ...] = ()
    #: ... or every namespace (``--all-namespaces``). Exactly one of the two.
    all_namespaces: bool = False
    #: kopf's liveness endpoint ``/healthz`` (None: off).
    liveness_port: int | None = 8080
    #: Prometheus ``/metrics`` (None: off).
    metrics_port: int | None = 9090
    host: str = "0.0.0.0"
    #: None: standalone (run one replica; the chart's Deployment uses ``strategy: Recreate``). A name: kopf peering
    #: with that KopfPeering object, so several replicas keep one active (needs kopf's peering CRDs installed).
    peering: str | None = None

    def __post_init__(self) -> None:
        if bool(self.namespaces) == self.all_namespaces:
            raise ConfigurationError("give --namespace (repeatable) or --all-namespaces, not both or neither")


def configure_kopf(settings: kopf.OperatorSettings, options: OperatorSettings) -> None:
    """kopf's settings, each set on purpose."""
    # The API server ends a watch after server_timeout; kopf then re-lists. A client timeout a bit longer catches
    # a silently dead connection. Connecting must be quick: the API server is near.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # Back off on API errors up to 30 s, then keep retrying at that pace.
    settings.networking.error_backoffs = (1, 2, 5, 10, 20, 30)
    # No handler needs a finalizer (see handlers.py); name it ours anyway should a later one need it.
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    # kopf's own per-object log lines become Events only from WARNING up; scale Events are posted explicitly.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = options.peering is None
    if options.peering is not None:
        settings.peering.name = options.peering
        settings.peering.mandatory = True


def run(options: OperatorSettings, *, stop_flag: threading.Event | None = None,
        ready_flag: threading.Event | None = None) -> None:
    """Run the operator until SIGTERM/SIGINT (or ``stop_flag``)."""
    metrics = OperatorMetrics()
    if options.metrics_port is not None:
        start_http_server(options.metrics_port, addr=options.host, registry=metrics.registry)
    kube = Kube(load_config())
    autoscaler = Autoscaler(kube, metrics)
    settings = kopf.OperatorSettings()
    configure_kopf(settings, options)
    liveness = (f"http://{options.host}:{options.liveness_port}/healthz"
                if options.liveness_port is not None else None)
    try:
        asyncio.run(kopf.operator(
            registry=build_registry(kube, autoscaler, metrics),
            settings=settings,
            standalone=options.peering is None,
            peering_name=options.peering,
            clusterwide=options.all_namespaces,
            namespaces=options.namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        ))
    finally:
        kube.close()
