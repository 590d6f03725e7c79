"""How many workers a TaskQueue should run: a pure policy over the queue's load, table-tested.

The load is what waits plus what runs: ready + due + in-flight messages over all of the TaskQueue's queues. Counting
the in-flight ones (delivered, not yet acked) is what keeps a queue whose backlog was just prefetched from being scaled
away under its running tasks. Counting the due ones (delayed messages whose time has come, which on Redis only a
worker's fetch moves to ready) is what wakes a queue at zero replicas for a countdown, an ETA or a retry's backoff.
Delayed messages not yet due are not load: they wake nobody until they are due.

- Up: at once, to ``ceil(load / targetPerReplica)``, at most ``scaleUp.maxStep`` replicas per poll.
- From zero: only once the load reaches ``activationThreshold``.
- Down: to the highest recommendation of the last ``scaleDown.stabilizationSeconds`` (so a queue must stay quiet
  for the whole window), at most ``scaleDown.maxStep`` replicas per poll, and never to zero while anything is in
  flight or while the in-flight count is unknown.
- Always within ``[minReplicas, maxReplicas]``; no decision at all without metrics (a broker outage never scales a
  queue to zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from taskfleet.errors import ConfigurationError


@dataclass(frozen=True, kw_only=True)
class ScalingPolicy:
    """``spec.autoscaling`` of a TaskQueue; the defaults are the CRD's."""

    #: False: run ``spec.replicas`` workers (``kubectl scale tq``) and never autoscale.
    enabled: bool = True
    min_replicas: int = 0
    max_replicas: int = 10
    #: Ready + due + in-flight messages one replica should carry.
    target_per_replica: int = 10
    #: Ready + due + in-flight messages that wake a queue scaled to zero.
    activation_threshold: int = 1
    poll_interval_s: float = 5.0
    #: Most replicas added per poll (None: no limit).
    scale_up_max_step: int | None = None
    #: Scale down only to the highest recommendation of this window.
    scale_down_stabilization_s: float = 60.0
    #: Most replicas removed per poll (None: no limit).
    scale_down_max_step: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ConfigurationError(
                f"minReplicas ({self.min_replicas}) must be between 0 and maxReplicas ({self.max_replicas})"
            )
        if self.target_per_replica < 1 or self.activation_threshold < 1 or self.poll_interval_s <= 0:
            raise ConfigurationError("targetPerReplica, activationThreshold and pollIntervalSeconds must be positive")
        for step in (self.scale_up_max_step, self.scale_down_max_step):
            if step is not None and step < 1:
                raise ConfigurationError(f"a scale step must be at least 1 (or unset), got {step}")


@dataclass(frozen=True, slots=True)
class Load:
    """Messages over all of a TaskQueue's queues. ``in_flight`` is None when the broker cannot count them
    (RabbitMQ without its management API). ``due``: delayed messages already due that no fetch has moved to ready
    yet (``QueueDepth.due``); work to do now, as ready ones are."""

    ready: int
    in_flight: int | None
    due: int = 0

    @property
    def total(self) -> int:
        return self.ready + self.due + (self.in_flight or 0)

    def describe(self) -> str:
        in_flight = "unknown" if self.in_flight is None else str(self.in_flight)
        due = f" due={self.due}" if self.due else ""
        return f"ready={self.ready} in-flight={in_flight}{due}"


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What one poll recommended, kept for the scale-down stabilization window."""

    at_s: float
    replicas: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The replica count to run, and why (``reason`` is a CamelCase condition reason)."""

    replicas: int
    reason: str
    message: str
    #: This poll's recommendation before stabilization and steps (None without metrics); keep it in the history.
    recommendation: int | None = None


def desired_replicas(
    policy: ScalingPolicy,
    *,
    current: int,
    load: Load | None,
    history: Sequence[Recommendation] = (),
    now_s: float = 0.0,
    paused: bool = False,
    fixed_replicas: int = 1,
) -> Decision:
    """The replicas a TaskQueue should run now.

    Args:
        policy: the TaskQueue's autoscaling policy.
        current: replicas the worker Deployment asks for now.
        load: the queues' load, or None when it could not be read (no decision is made then).
        history: earlier recommendations (any age; those outside the stabilization window are ignored).
        now_s: the clock ``history`` is measured on.
        paused: ``spec.paused``: run no workers.
        fixed_replicas: ``spec.replicas``, used while autoscaling is disabled.
    """
    if paused:
        return Decision(0, "Paused", "spec.paused is true: no workers run; messages wait in their queues")
    if not policy.enabled:
        return Decision(fixed_replicas, "AutoscalingDisabled",
                        f"autoscaling is disabled: spec.replicas={fixed_replicas}")
    if load is None:
        return Decision(current, "NoMetrics", f"queue depth unknown: keeping {current} replicas")

    wanted = math.ceil(load.total / policy.target_per_replica)
    if current == 0 and load.total < policy.activation_threshold:
        wanted = 0
    if load.in_flight is None and current > 0:
        wanted = max(wanted, 1)  # tasks may be running that nobody can count
    recommendation = min(max(wanted, policy.min_replicas), policy.max_replicas)
    seen = load.describe()

    if recommendation > current:
        target = recommendation
        if policy.scale_up_max_step is not None:  # the step never keeps a queue below minReplicas
            target = max(min(target, current + policy.scale_up_max_step), policy.min_replicas)
        capped = " (capped at maxReplicas)" if wanted > policy.max_replicas and target == policy.max_replicas else ""
        return Decision(target, "ScaledUp", f"scaled from {current} to {target}: {seen}{capped}", recommendation)

    if recommendation < current:
        window_start = now_s - policy.scale_down_stabilization_s
        target = max([recommendation, *(r.replicas for r in history if r.at_s >= window_start)])
        if policy.scale_down_max_step is not None:
            target = max(target, current - policy.scale_down_max_step)
        target = min(target, policy.max_replicas)  # neither window nor step keeps a queue above maxReplicas
        if target < current:
            return Decision(target, "ScaledDown", f"scaled from {current} to {target}: {seen}", recommendation)
        return Decision(
            current, "Stabilizing",
            f"keeping {current} replicas until the load has stayed low for "
            f"{policy.scale_down_stabilization_s:g} s (recommendation {recommendation}): {seen}",
            recommendation,
        )

    return Decision(current, "Stable", f"{current} replicas fit the load: {seen}", recommendation)
