"""The autoscaler: one polling loop per TaskQueue that reads the queue depth through the SDK's broker interface,
decides with ``scaling.desired_replicas``, scales the worker Deployment and writes the TaskQueue's status.

Why not kopf's timers or daemons: kopf puts a finalizer on every object that has one, so deleting a TaskQueue
would hang while the operator is down. These loops are plain asyncio tasks fed by a watch (``observe`` /
``forget`` from an ``on.event`` handler), which needs no finalizer; the Deployment is garbage-collected through its
owner reference.

Each poll runs in a worker thread (broker clients and the Kubernetes client are synchronous), starts
``pollIntervalSeconds`` after the previous one started, and is woken early when the TaskQueue's spec changes, or
when the broker says a queue of a TaskQueue at zero replicas got its first message (``wake.WakeListener``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from taskfleet.brokers import Broker, broker_kind, connect
from taskfleet.errors import BrokerError, ClusterError, ConfigurationError, InvalidResource
from taskfleet.operator.deletion_cost import CONDITION_TYPE, Outcome, scale_in_condition
from taskfleet.operator.kube import Kube
from taskfleet.operator.manifests import selector_string
from taskfleet.operator.metrics import OperatorMetrics
from taskfleet.operator.reconcile import apply_deployment
from taskfleet.operator.resources import TaskQueue, parse_task_queue
from taskfleet.operator.scale_in import ScaleInState, spare_busy_pods
from taskfleet.operator.scaling import Decision, Load, Recommendation, ScalingPolicy, desired_replicas
from taskfleet.operator.status import Observation, condition, polled_status, status_changed
from taskfleet.operator.wake import WakeListener
from taskfleet.operator.worker_pods import WorkersVerdict, workers_verdict
from taskfleet.settings import BrokerSettings, PublishRetry
from taskfleet.urls import mask_secrets
from taskfleet.worker.logging import get_logger

_log = get_logger("taskfleet.operator")

#: Socket timeout of the operator's broker clients: a poll must not hang on a dead broker.
BROKER_TIMEOUT_S = 3.0
#: Seconds between polls when a TaskQueue gives no interval (invalid spec, or a poll that crashed).
DEFAULT_POLL_INTERVAL_S = ScalingPolicy().poll_interval_s
#: An unchanged status is written again only this often (``lastPollTime`` shows the autoscaler is alive); steady
#: TaskQueues cost the API server one write per this many seconds, not one per poll.
STATUS_HEARTBEAT_S = 30.0
#: Seconds until the next poll after one that scaled a followed TaskQueue up from zero (``wake.WakeListener``): the
#: first message of a burst woke it, the next poll sizes the Deployment to the rest of the burst.
WAKE_FOLLOW_UP_S = 1.0


@dataclass
class _Watch:
    """What the autoscaler keeps per TaskQueue."""

    body: Mapping[str, Any]
    generation: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    history: deque[Recommendation] = field(default_factory=deque)
    broker: Broker | None = None
    broker_urls: tuple[str, str | None] | None = None
    reachable: bool | None = None
    scale_in: ScaleInState = field(default_factory=ScaleInState)
    #: Sets ``wake`` from any thread (the wake listener's); set by the loop.
    wake_soon: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class _Depth:
    broker_type: str | None
    load: Load | None
    delayed: int | None = None
    dead: int | None = None
    error: str | None = None
    error_reason: str = "Unreachable"


class Autoscaler:
    """Polling loops for every watched TaskQueue. ``observe``/``forget``/``close`` run on the event loop."""

    def __init__(self, kube: Kube, metrics: OperatorMetrics, *, clock: Callable[[], float] = time.monotonic,
                 may_act: Callable[[], bool] | None = None, pod_deletion_cost: bool = True,
                 wake: WakeListener | None = None) -> None:
        self._kube = kube
        #: Rank worker pods by their running tasks before a scale-in (``--no-pod-deletion-cost`` turns it off).
        self._pod_deletion_cost = pod_deletion_cost
        self._metrics = metrics
        self._clock = clock
        #: False while this replica does not hold the leader Lease (leader_election.py): it then neither scales
        #: nor writes status.
        self._may_act = may_act or (lambda: True)
        self._wake = wake if wake is not None else WakeListener()
        self._watches: dict[tuple[str, str], _Watch] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        """A TaskQueue was listed, added or modified: (re)start its loop; a spec change wakes it at once."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        generation = int(meta.get("generation") or 0)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch(body=body, generation=generation)
            watch.task = asyncio.create_task(self._loop(key, watch), name=f"autoscaler {key[0]}/{key[1]}")
            return
        watch.body = body
        if generation != watch.generation:
            watch.generation = generation
            watch.wake.set()

    async def forget(self, namespace: str, name: str) -> None:
        """A TaskQueue was deleted: stop its loop (its Deployment goes with it, by garbage collection)."""
        watch = self._watches.pop((namespace, name), None)
        if watch is not None:
            self._wake.untrack((namespace, name))
            await self._stop(watch)
            self._metrics.forget(namespace, name)

    async def close(self) -> None:
        watches, self._watches = list(self._watches.values()), {}
        for watch in watches:
            await self._stop(watch)
        await asyncio.to_thread(self._wake.close)

    async def _stop(self, watch: _Watch) -> None:
        if watch.task is not None:
            watch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch.task
        await asyncio.to_thread(watch.scale_in.close)
        if watch.broker is not None:
            await asyncio.to_thread(_close_quietly, watch.broker)

    async def _loop(self, key: tuple[str, str], watch: _Watch) -> None:
        loop = asyncio.get_running_loop()

        def wake_soon() -> None:
            loop.call_soon_threadsafe(watch.wake.set)

        watch.wake_soon = wake_soon
        while True:
            started = self._clock()
            interval = DEFAULT_POLL_INTERVAL_S
            watch.wake.clear()  # a spec change during the poll below wakes the next one at once
            try:
                interval = await asyncio.to_thread(self.poll, watch)
            except Exception:  # noqa: BLE001 - a bug in one poll must not end the loop
                _log.exception("autoscaler_poll_crashed", namespace=key[0], taskqueue=key[1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), timeout=max(0.0, started + interval - self._clock()))

    def poll(self, watch: _Watch) -> float:
        """One poll of one TaskQueue (in a worker thread). Returns the seconds until the next one."""
        started = self._clock()
        body = watch.body
        if not self._may_act():
            return DEFAULT_POLL_INTERVAL_S
        try:
            tq = parse_task_queue(body)
        except InvalidResource:
            self._metrics.poll_seconds.labels("invalid").observe(self._clock() - started)
            return DEFAULT_POLL_INTERVAL_S  # the reconcile handler reports it in the Ready condition
        labels = (tq.namespace, tq.name)
        try:
            applied = apply_deployment(self._kube, self._metrics, tq)
        except (InvalidResource, ClusterError) as exc:
            _log.warning("deployment_not_reconciled", namespace=tq.namespace, taskqueue=tq.name, error=str(exc))
            self._metrics.poll_seconds.labels("cluster_error").observe(self._clock() - started)
            return tq.autoscaling.poll_interval_s
        current = applied.replicas
        depth = self._read_depth(watch, tq)
        now_s = self._clock()
        if not watch.history:  # after a (re)start, a scale-down waits a whole window
            watch.history.append(Recommendation(now_s, current))
        decision = desired_replicas(tq.autoscaling, current=current, load=depth.load, history=watch.history,
                                    now_s=now_s, paused=tq.paused, fixed_replicas=tq.replicas)
        if decision.recommendation is not None:
            watch.history.append(Recommendation(now_s, decision.recommendation))
        while watch.history and watch.history[0].at_s < now_s - tq.autoscaling.scale_down_stabilization_s:
            watch.history.popleft()

        outcome = "ok" if depth.load is not None else "broker_error"
        scaled = decision.replicas != current
        try:
            if scaled:
                self._scale(watch, tq, current, decision)
            self._report_reachability(watch, tq, depth)
            replicas = decision.replicas if scaled else current
            seen = Observation(
                broker_type=depth.broker_type, load=depth.load, delayed=depth.delayed, dead=depth.dead,
                broker_error=depth.error, broker_error_reason=depth.error_reason, deployment_error=None,
                replicas=replicas, decision=decision, scaled=scaled, ready_replicas=applied.ready_replicas,
                workers=self._workers(tq, applied.ready_replicas, replicas),
            )
            now = datetime.now(UTC)
            previous = body.get("status") or {}
            status = polled_status(tq, seen, previous=previous, now=now, selector=selector_string(tq))
            status["conditions"].append(self._scale_in_condition(watch, tq, previous, now))
            if status_changed(previous, status, now=now, heartbeat_s=STATUS_HEARTBEAT_S):
                self._kube.patch_status(tq.namespace, tq.name, status)
        except ClusterError as exc:
            outcome = "cluster_error"
            _log.warning("scale_or_status_failed", namespace=tq.namespace, taskqueue=tq.name, error=str(exc))
        else:
            self._export(labels, replicas, decision, depth)
        woken_from_zero = self._follow_wakes(watch, tq, replicas if outcome == "ok" else None)
        self._metrics.poll_seconds.labels(outcome).observe(self._clock() - started)
        if woken_from_zero:  # the rest of the burst that woke it is counted soon, not a whole interval later
            return min(tq.autoscaling.poll_interval_s, WAKE_FOLLOW_UP_S)
        return tq.autoscaling.poll_interval_s

    def _export(self, labels: tuple[str, str], replicas: int, decision: Decision, depth: _Depth) -> None:
        """The poll's outcome as Prometheus gauges."""
        self._metrics.replicas.labels(*labels).set(replicas)
        self._metrics.desired.labels(*labels).set(decision.replicas)
        self._metrics.broker_reachable.labels(*labels).set(1 if depth.load is not None else 0)
        if depth.load is not None:
            self._metrics.ready.labels(*labels).set(depth.load.ready)
            self._metrics.in_flight.labels(*labels).set(depth.load.in_flight or 0)
            self._metrics.due.labels(*labels).set(depth.load.due)

    def _scale(self, watch: _Watch, tq: TaskQueue, current: int, decision: Decision) -> None:
        """Scale the worker Deployment to ``decision.replicas``; before a scale-in, idle pods are made the cheapest
        to delete (best effort)."""
        if self._pod_deletion_cost and tq.worker.app_name and 0 < decision.replicas < current:
            watch.scale_in.last = self._spare_busy_pods(watch, tq, current, decision.replicas)
        self._kube.scale_deployment(tq.namespace, tq.deployment_name, decision.replicas)
        direction = "up" if decision.replicas > current else "down"
        self._metrics.scale_events.labels(tq.namespace, tq.name, direction).inc()
        _log.info("scaled", namespace=tq.namespace, taskqueue=tq.name, replicas_from=current,
                  replicas_to=decision.replicas, reason=decision.reason, message=decision.message)
        self._event(tq, "Scaled", decision.message)

    def _workers(self, tq: TaskQueue, ready: int, desired: int) -> WorkersVerdict:
        """Whether the worker pods are ready; their pods are listed only when fewer are ready than asked for."""
        if ready >= desired:
            return workers_verdict(ready, desired, ())
        try:
            pods = self._kube.pods(tq.namespace, selector_string(tq))
        except ClusterError as exc:  # e.g. a chart without the pods rule: the column still shows ready/desired
            return workers_verdict(ready, desired, None, pods_error=str(exc))
        return workers_verdict(ready, desired, pods)

    def _follow_wakes(self, watch: _Watch, tq: TaskQueue, replicas: int | None) -> bool:
        """Have the broker's first message into an empty queue wake this TaskQueue while it has no workers and
        its broker answered (only then would a message go unseen until the next poll). True when it was followed
        and has just been scaled up."""
        key = (tq.namespace, tq.name)
        if replicas == 0 and watch.broker_urls is not None and watch.wake_soon is not None:
            self._wake.track(key, watch.broker_urls[0], tq.queues, watch.wake_soon)
            return False
        return self._wake.untrack(key) and bool(replicas)

    def _read_depth(self, watch: _Watch, tq: TaskQueue) -> _Depth:
        """The load over ``tq``'s queues, or why it is unknown (masked: never a credential)."""
        broker_type = None
        try:
            url = tq.broker.url or self._kube.secret_value(tq.namespace, tq.broker.url_from)  # type: ignore[arg-type]
            management = (self._kube.secret_value(tq.namespace, tq.broker.management_url_from)
                          if tq.broker.management_url_from else None)
            broker_type = broker_kind(url)
            if watch.broker is None or watch.broker_urls != (url, management):
                if watch.broker is not None:
                    _close_quietly(watch.broker)
                watch.broker = None
                watch.broker = connect(BrokerSettings(
                    url=url, management_url=management, socket_timeout_s=BROKER_TIMEOUT_S,
                    publish_retry=PublishRetry(max_attempts=1),
                ))
                watch.broker_urls = (url, management)
            depths = [watch.broker.queue_depth(q) for q in tq.queues]
        except InvalidResource as exc:
            return _Depth(broker_type, None, error=str(exc), error_reason="SecretMissing")
        except ClusterError as exc:
            return _Depth(broker_type, None, error=f"cannot read the broker Secret: {exc}",
                          error_reason="SecretUnreadable")
        except (BrokerError, ConfigurationError, OSError) as exc:
            if watch.broker is not None:  # reconnect from scratch next time
                _close_quietly(watch.broker)
                watch.broker = None
            return _Depth(broker_type, None, error=mask_secrets(f"{type(exc).__name__}: {exc}"))
        in_flight_known = all(d.in_flight_known for d in depths)
        return _Depth(
            broker_type,
            Load(ready=sum(d.ready for d in depths),
                 in_flight=sum(d.in_flight for d in depths) if in_flight_known else None,
                 due=sum(d.due for d in depths)),
            delayed=sum(d.delayed for d in depths) if all(d.delayed_known for d in depths) else None,
            dead=sum(d.dead for d in depths),
        )

    def _spare_busy_pods(self, watch: _Watch, tq: TaskQueue, current: int, target: int) -> Outcome:
        """``scale_in.spare_busy_pods``, which must never keep the scale-in from happening, not even on a bug."""
        try:
            return spare_busy_pods(self._kube, watch.scale_in, tq, watch.broker, current=current, target=target)
        except Exception as exc:  # noqa: BLE001 - best effort: the replicas change regardless
            _log.exception("scale_in_ranking_crashed", namespace=tq.namespace, taskqueue=tq.name)
            return Outcome(False, "Failed", f"ranking the pods failed ({type(exc).__name__}); pods were removed by "
                                            "the ReplicaSet's default ranking")

    def _scale_in_condition(self, watch: _Watch, tq: TaskQueue, previous: Mapping[str, Any], now: datetime
                            ) -> dict[str, Any]:
        """``ScaleInSparesBusyPods``: whether a scale-in of this TaskQueue spares busy pods, and why not."""
        conditions = previous.get("conditions") or []
        old = next((c for c in conditions if c.get("type") == CONDITION_TYPE), None)
        said = scale_in_condition(enabled=self._pod_deletion_cost, app_name=tq.worker.app_name,
                                  last=watch.scale_in.last, previous=old)
        return condition(conditions, CONDITION_TYPE, said.status, said.reason, said.message, now=now,
                         generation=tq.generation)

    def _report_reachability(self, watch: _Watch, tq: TaskQueue, depth: _Depth) -> None:
        """An Event when the broker becomes unreachable or reachable again (not on every failed poll)."""
        reachable = depth.load is not None
        if reachable == watch.reachable:
            return
        if not reachable:
            _log.warning("broker_unreachable", namespace=tq.namespace, taskqueue=tq.name, error=depth.error)
            self._event(tq, "BrokerUnreachable", f"{depth.error}; replicas are left as they are", warning=True)
        elif watch.reachable is False:
            self._event(tq, "BrokerReachable", "queue depth readable again; autoscaling resumed")
        watch.reachable = reachable

    def _event(self, tq: TaskQueue, reason: str, message: str, *, warning: bool = False) -> None:
        try:
            self._kube.event(tq, reason, message, warning=warning)
        except ClusterError as exc:  # an Event is a courtesy; never fail a poll over it
            _log.warning("event_not_recorded", namespace=tq.namespace, taskqueue=tq.name, reason=reason,
                         error=str(exc))


def _close_quietly(broker: Broker) -> None:
    with contextlib.suppress(Exception):
        broker.close()
