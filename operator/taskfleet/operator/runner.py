"""Running the operator: kopf settings chosen on purpose, the metrics server, and the kopf main loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import kopf
from prometheus_client import start_http_server

from taskfleet.errors import ClusterError, ConfigurationError
from taskfleet.operator.autoscaler import Autoscaler
from taskfleet.operator.handlers import build_registry
from taskfleet.operator.kube import Kube, load_config
from taskfleet.operator.metrics import OperatorMetrics
from taskfleet.operator.resources import GROUP, PLURAL, VERSION
from taskfleet.worker.logging import get_logger

#: Where kopf keeps handler progress and the last handled spec (annotations: the status schema is strict).
ANNOTATION_PREFIX = "taskfleet.io"
#: Seconds between checks while the TaskQueue CRD is not served yet.
CRD_POLL_S = 2.0


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
    #: Address the liveness and metrics servers bind; ``0.0.0.0``: every interface, so the kubelet and Prometheus
    #: can reach them.
    host: str = "0.0.0.0"
    #: None: standalone (run one replica; the chart's Deployment uses ``strategy: Recreate``). A name: kopf peering
    #: with that KopfPeering object, so several replicas keep one active (needs kopf's peering CRDs installed).
    peering: str | None = None
    #: Before a scale-in, set ``controller.kubernetes.io/pod-deletion-cost`` on worker pods from their workers'
    #: heartbeats so idle pods go first (``--no-pod-deletion-cost``: off; needs pods list + patch when on).
    pod_deletion_cost: bool = True

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
    # No cluster-wide discovery watches: the operator needs no permission on CRDs or Namespaces (the chart grants
    # none). kopf then scans resources once at start-up, so run() waits until the TaskQueue CRD is served first.
    # Namespace globs ('team-*') need the Namespace watch to find matches, so they keep scanning on.
    settings.scanning.disabled = not any(_is_glob(ns) for ns in options.namespaces)
    settings.peering.standalone = options.peering is None
    if options.peering is not None:
        settings.peering.name = options.peering
        settings.peering.mandatory = True


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[!")


def wait_for_crd(kube: Kube, *, poll_s: float = CRD_POLL_S, stop_flag: threading.Event | None = None) -> bool:
    """Block until the API server serves TaskQueues (a fresh install may start the operator before its CRD is
    established). Returns False when ``stop_flag`` is set first."""
    log = get_logger("taskfleet.operator")
    told = False
    while stop_flag is None or not stop_flag.is_set():
        try:
            if kube.serves_task_queues():
                return True
            reason = f"{PLURAL}.{GROUP}/{VERSION} is not served yet (is the CRD installed?)"
        except ClusterError as exc:
            reason = str(exc)
        if not told:
            log.warning("waiting for the TaskQueue CRD", reason=reason, retry_every_s=poll_s)
            told = True
        if stop_flag is None:
            time.sleep(poll_s)
        else:
            stop_flag.wait(poll_s)
    return False


@contextlib.contextmanager
def _stopped_by_signals(stop_flag: threading.Event | None) -> Iterator[threading.Event]:
    """A stop flag that SIGTERM/SIGINT set while kopf's own handlers are not installed yet. As PID 1 in a container
    a process without a SIGTERM handler ignores SIGTERM, and the pod would wait out its grace period."""
    if stop_flag is not None:
        yield stop_flag
        return
    flag = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: flag.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(options: OperatorSettings, *, stop_flag: threading.Event | None = None,
        ready_flag: threading.Event | None = None) -> None:
    """Run the operator until SIGTERM/SIGINT (or ``stop_flag``)."""
    metrics = OperatorMetrics()
    if options.metrics_port is not None:
        start_http_server(options.metrics_port, addr=options.host, registry=metrics.registry)
    kube = Kube(load_config())
    with _stopped_by_signals(stop_flag) as waiting_stopped:
        served = wait_for_crd(kube, stop_flag=waiting_stopped)
    if not served:
        kube.close()
        return
    autoscaler = Autoscaler(kube, metrics, pod_deletion_cost=options.pod_deletion_cost)
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
