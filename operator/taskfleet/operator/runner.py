"""Running the operator: kopf settings chosen on purpose, the metrics and readiness server, the readiness checks of
the Kubernetes API, and the kopf main loop."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import kopf

from taskfleet.errors import ClusterError, ConfigurationError
from taskfleet.operator.autoscaler import Autoscaler
from taskfleet.operator.handlers import build_registry
from taskfleet.operator.kube import Kube, load_config
from taskfleet.operator.leader_election import LeaderElector, LeaseTiming
from taskfleet.operator.metrics import OperatorMetrics
from taskfleet.operator.readiness import DEFAULT_CHECK_INTERVAL_S, DEFAULT_STALE_AFTER_S, Readiness
from taskfleet.operator.resources import GROUP, PLURAL, VERSION
from taskfleet.worker.health import HealthServer
from taskfleet.worker.logging import get_logger

#: Where kopf keeps handler progress and the last handled spec (annotations: the status schema is strict).
ANNOTATION_PREFIX = "taskfleet.io"
#: Seconds between checks while the TaskQueue CRD is not served yet.
CRD_POLL_S = 2.0
#: Seconds to wait at shutdown for an API check in progress (it ends at the client's request timeout anyway).
CHECK_JOIN_TIMEOUT_S = 2.0


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """How ``taskfleet operator`` runs."""

    #: Watch only these namespaces (``--namespace``, repeatable) ...
    namespaces: tuple[str, ...] = ()
    #: ... or every namespace (``--all-namespaces``). Exactly one of the two.
    all_namespaces: bool = False
    #: kopf's liveness endpoint ``/healthz`` (None: off).
    liveness_port: int | None = 8080
    #: Prometheus ``/metrics`` and the readiness endpoint ``/readyz`` (None: off).
    metrics_port: int | None = 9090
    #: Address the liveness and metrics servers bind; ``0.0.0.0``: every interface, so the kubelet and Prometheus
    #: can reach them.
    host: str = "0.0.0.0"
    #: None: standalone (run one replica; the chart's Deployment uses ``strategy: Recreate``). A name: kopf peering
    #: with that KopfPeering object, so several replicas keep one active (needs kopf's peering CRDs installed).
    peering: str | None = None
    #: Seconds between readiness checks of the Kubernetes API (a list of at most one TaskQueue, in the watch's
    #: scope).
    api_check_interval_s: float = DEFAULT_CHECK_INTERVAL_S
    #: ``/readyz`` answers 503 once the Kubernetes API has not answered a check for this many seconds.
    api_stale_after_s: float = DEFAULT_STALE_AFTER_S
    #: ``NAMESPACE/NAME`` of a coordination.k8s.io Lease: run several replicas, of which the one holding the Lease
    #: acts and the others wait (``--leader-elect``; docs/operator.md). None: no leader election.
    leader_election_lease: str | None = None
    #: The Lease's durations (client-go's, a little shorter).
    lease_timing: LeaseTiming = field(default_factory=LeaseTiming)
    #: Before a scale-in, set ``controller.kubernetes.io/pod-deletion-cost`` on worker pods from their workers'
    #: heartbeats so idle pods go first (``--no-pod-deletion-cost``: off; needs pods list + patch when on).
    pod_deletion_cost: bool = True

    def __post_init__(self) -> None:
        if bool(self.namespaces) == self.all_namespaces:
            raise ConfigurationError("give --namespace (repeatable) or --all-namespaces, not both or neither")
        if not 0 < self.api_check_interval_s <= self.api_stale_after_s:
            raise ConfigurationError("the API check interval must be positive and at most the stale-after time")
        if self.leader_election_lease is not None:
            if self.peering is not None:
                raise ConfigurationError("give --leader-elect or --peering, not both")
            namespace, _, name = self.leader_election_lease.partition("/")
            if not namespace or not name or "/" in name:
                raise ConfigurationError(f"--leader-elect wants NAMESPACE/NAME, got {self.leader_election_lease!r}")


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


def check_api(kube: Kube, options: OperatorSettings) -> None:
    """One readiness check: list at most one TaskQueue where the watch lists them (cluster-wide, or the first
    named namespace); with only namespace globs, ask discovery whether TaskQueues are served.

    Raises:
        ClusterError: the API server did not answer, refused, or does not serve TaskQueues.
    """
    if options.all_namespaces:
        kube.list_task_queues(None, limit=1)
        return
    named = [ns for ns in options.namespaces if not _is_glob(ns)]
    if named:
        kube.list_task_queues(named[0], limit=1)
    elif not kube.serves_task_queues():
        raise ClusterError(f"{PLURAL}.{GROUP}/{VERSION} is not served (is the CRD installed?)")


def _check_api_until(stop: threading.Event, kube: Kube, options: OperatorSettings, readiness: Readiness) -> None:
    """Check the API every ``api_check_interval_s`` until ``stop`` is set (a thread of its own: a check may block
    for the client's request timeout, and kopf's event loop must not)."""
    told: str | None = None
    while True:
        try:
            check_api(kube, options)
        except ClusterError as exc:
            readiness.failed(str(exc))
            if told != str(exc):
                get_logger("taskfleet.operator").warning("kubernetes_api_check_failed", error=str(exc))
                told = str(exc)
        else:
            readiness.reached()
            told = None
        if stop.wait(options.api_check_interval_s):
            return


@contextlib.contextmanager
def _probes(kube: Kube, options: OperatorSettings, metrics: OperatorMetrics,
            watching: threading.Event) -> Iterator[None]:
    """``/metrics`` and ``/readyz`` on the metrics port (``/healthz`` there only says the process serves), fed
    by the API checks on a daemon thread; both stop on exit."""
    readiness = Readiness(stale_after_s=options.api_stale_after_s, watching=watching)
    server = None
    if options.metrics_port is not None:
        server = HealthServer(host=options.host, port=options.metrics_port, liveness=lambda: (True, "ok"),
                              readiness=readiness.probe, metrics=metrics.exposition)
        server.start()
    stop = threading.Event()
    checker = threading.Thread(target=_check_api_until, args=(stop, kube, options, readiness),
                               name="taskfleet-api-check", daemon=True)
    checker.start()
    try:
        yield
    finally:
        stop.set()
        checker.join(timeout=CHECK_JOIN_TIMEOUT_S)
        if server is not None:
            server.stop()


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


@contextlib.contextmanager
def _standby_liveness(options: OperatorSettings) -> Iterator[None]:
    """Answer ``/healthz`` while waiting for the Lease (kopf serves it only once it runs), so the kubelet does not
    restart a healthy standby."""
    if options.liveness_port is None:
        yield
        return

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b"standby\n")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((options.host, options.liveness_port), Healthy)
    thread = threading.Thread(target=server.serve_forever, name="standby liveness", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def _elector(kube: Kube, options: OperatorSettings) -> LeaderElector | None:
    if options.leader_election_lease is None:
        return None
    namespace, _, name = options.leader_election_lease.partition("/")
    # Unique per process: a restarted container keeps its pod name but must not inherit the old one's lease.
    identity = f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    return LeaderElector(kube, namespace=namespace, name=name, identity=identity, timing=options.lease_timing)


class LeadershipLost(ClusterError):
    """The operator could not renew its Lease in time and stopped acting; its pod restarts as a standby."""


def run(options: OperatorSettings, *, stop_flag: threading.Event | None = None,
        ready_flag: threading.Event | None = None) -> None:
    """Run the operator until SIGTERM/SIGINT (or ``stop_flag``). ``ready_flag`` is raised when kopf's reactor
    has started (``/readyz`` also needs a recent answer of the API). With leader election, wait for the Lease first
    (Ready as a standby: it reaches the API and is ready to take over) and raise LeadershipLost when it is lost."""
    metrics = OperatorMetrics()
    kube = Kube(load_config(), all_namespaces=options.all_namespaces)
    watching = ready_flag if ready_flag is not None else threading.Event()
    elector = _elector(kube, options)
    lost = threading.Event()
    renewing = threading.Event()
    try:
        with _probes(kube, options, metrics, watching):
            with _stopped_by_signals(stop_flag) as waiting_stopped:
                served = wait_for_crd(kube, stop_flag=waiting_stopped)
                if served and elector is not None:
                    watching.set()  # a standby that reads the Lease is as ready as it can be
                    with _standby_liveness(options):
                        served = elector.acquire(waiting_stopped)
            if not served:
                return
            autoscaler = Autoscaler(kube, metrics, pod_deletion_cost=options.pod_deletion_cost,
                                    may_act=(lambda: elector.leading) if elector is not None else None)
            settings = kopf.OperatorSettings()
            configure_kopf(settings, options)
            liveness = (f"http://{options.host}:{options.liveness_port}/healthz"
                        if options.liveness_port is not None else None)

            if elector is not None:
                def on_lost() -> None:
                    lost.set()
                    if stop_flag is not None:
                        stop_flag.set()
                    else:  # kopf's own SIGTERM handler stops it, as on a pod deletion
                        os.kill(os.getpid(), signal.SIGTERM)
                threading.Thread(target=elector.keep_leading, args=(renewing, on_lost), name="lease renewal",
                                 daemon=True).start()

            # No stop flag of ours when none is given: kopf would wait for it in a task that, after a SIGTERM,
            # counts as hung, and kopf gives hung tasks 5 s (a clean handover would take that much longer).
            asyncio.run(kopf.operator(
                registry=build_registry(kube, autoscaler, metrics),
                settings=settings,
                standalone=options.peering is None,
                peering_name=options.peering,
                clusterwide=options.all_namespaces,
                namespaces=options.namespaces,
                liveness_endpoint=liveness,
                stop_flag=stop_flag,
                ready_flag=watching,
            ))
    finally:
        renewing.set()
        if elector is not None and not lost.is_set():
            elector.release()
        kube.close()
    if lost.is_set():
        raise LeadershipLost("lost the leader Lease: stopped acting")
