"""Specification of the autoscaler (taskfleet.operator.scaling.desired_replicas): a pure policy, table-tested."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from taskfleet.errors import ConfigurationError
from taskfleet.operator.scaling import Decision, Load, Recommendation, ScalingPolicy, desired_replicas

NOW_S = 1_000.0
WINDOW_S = 60.0


def _policy(**overrides: Any) -> ScalingPolicy:
    """The CRD's defaults (min 0, max 10, 10 messages per replica, activation 1, 60 s window), with overrides."""
    return ScalingPolicy(**overrides)


def _seen(seconds_ago: float, replicas: int) -> Recommendation:
    return Recommendation(at_s=NOW_S - seconds_ago, replicas=replicas)


@pytest.mark.parametrize(
    ("policy", "current", "load", "history", "expected_replicas", "expected_reason"),
    [
        # Waking from zero
        pytest.param(_policy(), 0, Load(0, 0), (), 0, "Stable", id="an idle queue stays at zero"),
        pytest.param(_policy(activation_threshold=5), 0, Load(4, 0), (), 0, "Stable",
                     id="below activationThreshold a queue stays at zero"),
        pytest.param(_policy(activation_threshold=5), 0, Load(5, 0), (), 1, "ScaledUp",
                     id="reaching activationThreshold wakes a queue from zero"),
        pytest.param(_policy(activation_threshold=5), 0, Load(2, 3), (), 1, "ScaledUp",
                     id="in-flight messages count towards activation"),
        # Delayed work: due messages are work to do now (on Redis only a worker's fetch makes them ready)
        pytest.param(_policy(), 0, Load(0, 0, due=1), (), 1, "ScaledUp",
                     id="one due delayed message wakes a queue from zero"),
        pytest.param(_policy(activation_threshold=5), 0, Load(2, 0, due=3), (), 1, "ScaledUp",
                     id="due messages count towards activation"),
        pytest.param(_policy(activation_threshold=5), 0, Load(0, 0, due=4), (), 0, "Stable",
                     id="due messages below activationThreshold leave a queue at zero"),
        pytest.param(_policy(), 0, Load(0, None, due=1), (), 1, "ScaledUp",
                     id="in-flight unknown: due messages still wake a queue from zero"),
        pytest.param(_policy(), 1, Load(10, 0, due=15), (), 3, "ScaledUp",
                     id="the load is ready plus due plus in-flight"),
        pytest.param(_policy(scale_down_stabilization_s=0), 1, Load(0, 0, due=1), (_seen(1, 1),), 1, "Stable",
                     id="a due message keeps the last replica"),
        # Scaling up
        pytest.param(_policy(), 1, Load(45, 0), (), 5, "ScaledUp", id="up at once to ceil(load / targetPerReplica)"),
        pytest.param(_policy(), 1, Load(10, 20), (), 3, "ScaledUp", id="the load is ready plus in-flight"),
        pytest.param(_policy(), 2, Load(200, 0), (), 10, "ScaledUp",
                     id="200 ready at 10 per replica wants 20, capped at maxReplicas"),
        pytest.param(_policy(scale_up_max_step=2), 1, Load(100, 0), (), 3, "ScaledUp",
                     id="scaleUp.maxStep limits the replicas added per poll"),
        pytest.param(_policy(), 3, Load(25, 0), (), 3, "Stable", id="a fitting replica count is stable"),
        # Clamps
        pytest.param(_policy(min_replicas=3), 0, Load(0, 0), (), 3, "ScaledUp",
                     id="below minReplicas scales up at once, even when idle"),
        pytest.param(_policy(min_replicas=2), 2, Load(0, 0), (), 2, "Stable", id="an idle queue stays at minReplicas"),
        pytest.param(_policy(max_replicas=4), 8, Load(100, 0), (_seen(10, 8),), 4, "ScaledDown",
                     id="above maxReplicas comes down even inside the stabilization window"),
        pytest.param(_policy(min_replicas=3, scale_up_max_step=1), 0, Load(0, 0), (), 3, "ScaledUp",
                     id="scaleUp.maxStep never keeps a queue below minReplicas"),
        pytest.param(_policy(max_replicas=4, scale_down_max_step=1), 8, Load(100, 0), (), 4, "ScaledDown",
                     id="scaleDown.maxStep never keeps a queue above maxReplicas"),
        # Scaling down
        pytest.param(_policy(), 5, Load(10, 0), (_seen(30, 5),), 5, "Stabilizing",
                     id="scale-down waits while a higher recommendation is inside the window"),
        pytest.param(_policy(), 5, Load(10, 0), (_seen(WINDOW_S, 5),), 5, "Stabilizing",
                     id="a recommendation exactly at the window's edge still holds"),
        pytest.param(_policy(), 5, Load(10, 0), (_seen(WINDOW_S + 1, 5),), 1, "ScaledDown",
                     id="scale-down happens once the higher recommendation is older than the window"),
        pytest.param(_policy(), 5, Load(10, 0), (_seen(90, 9), _seen(30, 3), _seen(5, 2)), 3, "ScaledDown",
                     id="scale-down goes to the highest recommendation inside the window"),
        pytest.param(_policy(scale_down_stabilization_s=0), 5, Load(0, 0), (_seen(1, 5),), 0, "ScaledDown",
                     id="a zero window scales down at once"),
        pytest.param(_policy(scale_down_max_step=2), 8, Load(0, 0), (), 6, "ScaledDown",
                     id="scaleDown.maxStep limits the replicas removed per poll"),
        # In-flight work
        pytest.param(_policy(), 3, Load(0, 2), (), 1, "ScaledDown",
                     id="never to zero while messages are in flight, even with nothing ready"),
        pytest.param(_policy(), 1, Load(0, 1), (), 1, "Stable",
                     id="one unacked message keeps the last replica"),
        pytest.param(_policy(), 3, Load(0, None), (), 1, "ScaledDown",
                     id="in-flight unknown: a running queue is never scaled to zero"),
        pytest.param(_policy(), 1, Load(0, None), (), 1, "Stable", id="in-flight unknown: the last replica stays"),
        pytest.param(_policy(), 0, Load(5, None), (), 1, "ScaledUp",
                     id="in-flight unknown: a queue still scales up from zero"),
        pytest.param(_policy(), 0, Load(0, None), (), 0, "Stable",
                     id="in-flight unknown: an idle queue at zero stays at zero"),
    ],
)
def test_desired_replicas(
    policy: ScalingPolicy,
    current: int,
    load: Load,
    history: Sequence[Recommendation],
    expected_replicas: int,
    expected_reason: str,
) -> None:
    decision = desired_replicas(policy, current=current, load=load, history=history, now_s=NOW_S)

    assert (decision.replicas, decision.reason) == (expected_replicas, expected_reason)


def test_a_capped_scale_up_says_so_in_its_message() -> None:
    # Given 200 ready messages at 10 per replica (20 replicas wanted) and maxReplicas 10
    policy = _policy(max_replicas=10, target_per_replica=10)

    # When the autoscaler decides
    decision = desired_replicas(policy, current=2, load=Load(200, 0))

    # Then it runs 10 and says why not 20
    assert decision.replicas == 10
    assert "capped at maxReplicas" in decision.message


def test_an_uncapped_scale_up_does_not_claim_to_be_capped() -> None:
    decision = desired_replicas(_policy(), current=2, load=Load(50, 0))

    assert decision.replicas == 5
    assert "capped" not in decision.message


def test_a_scale_up_held_back_by_its_step_does_not_blame_maxreplicas() -> None:
    decision = desired_replicas(_policy(max_replicas=10, scale_up_max_step=3), current=2, load=Load(200, 0))

    assert decision.replicas == 5
    assert "capped" not in decision.message


def test_a_change_is_explained_with_the_load_that_caused_it() -> None:
    # Given 120 ready and 8 in-flight messages at 30 per replica
    policy = _policy(target_per_replica=30)

    # When 2 replicas run
    decision = desired_replicas(policy, current=2, load=Load(ready=120, in_flight=8))

    # Then the message reads as a log line
    assert decision == Decision(5, "ScaledUp", "scaled from 2 to 5: ready=120 in-flight=8", recommendation=5)


def test_due_messages_are_named_in_the_explanation() -> None:
    decision = desired_replicas(_policy(), current=0, load=Load(ready=0, in_flight=0, due=1))

    assert decision.message == "scaled from 0 to 1: ready=0 in-flight=0 due=1"


def test_an_unknown_in_flight_count_is_described_as_unknown() -> None:
    decision = desired_replicas(_policy(), current=0, load=Load(ready=3, in_flight=None))

    assert decision.message == "scaled from 0 to 1: ready=3 in-flight=unknown"


def test_a_stabilizing_decision_names_the_window_and_the_recommendation() -> None:
    decision = desired_replicas(_policy(), current=5, load=Load(10, 0), history=[_seen(30, 5)], now_s=NOW_S)

    assert decision.reason == "Stabilizing"
    assert "60 s" in decision.message
    assert "recommendation 1" in decision.message


@pytest.mark.parametrize(
    ("current", "history", "expected_replicas", "expected_recommendation"),
    [
        pytest.param(1, (), 5, 5, id="scale-up: the recommendation is the target"),
        pytest.param(9, (_seen(10, 9),), 9, 5, id="stabilizing: the recommendation is below the replicas kept"),
        pytest.param(9, (), 5, 5, id="scale-down: the recommendation is the target"),
        pytest.param(5, (), 5, 5, id="stable: the recommendation is the replicas kept"),
    ],
)
def test_the_recommendation_is_returned_for_the_history(
    current: int, history: Sequence[Recommendation], expected_replicas: int, expected_recommendation: int
) -> None:
    decision = desired_replicas(_policy(), current=current, load=Load(50, 0), history=history, now_s=NOW_S)

    assert decision.replicas == expected_replicas
    assert decision.recommendation == expected_recommendation


def test_a_queue_must_stay_quiet_for_the_whole_window_before_it_scales_down() -> None:
    # Given a queue running 5 replicas for 50 messages, polled every 5 s, whose load then drops to nothing
    policy = _policy(poll_interval_s=5.0, scale_down_stabilization_s=WINDOW_S)
    history: list[Recommendation] = []
    replicas = desired_replicas(policy, current=0, load=Load(50, 0)).replicas
    history.append(Recommendation(at_s=0.0, replicas=5))

    # When it is polled until the window has passed
    decisions: dict[float, Decision] = {}
    for now_s in [5.0 * i for i in range(1, 14)]:
        decision = desired_replicas(policy, current=replicas, load=Load(0, 0), history=history, now_s=now_s)
        assert decision.recommendation is not None
        history.append(Recommendation(at_s=now_s, replicas=decision.recommendation))
        replicas = decision.replicas
        decisions[now_s] = decision

    # Then it keeps its replicas while the busy poll is inside the window, and scales to zero once it is not
    assert {d.reason for t, d in decisions.items() if t <= WINDOW_S} == {"Stabilizing"}
    assert (decisions[65.0].reason, decisions[65.0].replicas) == ("ScaledDown", 0)


@pytest.mark.parametrize("current", [pytest.param(0, id="at zero"), pytest.param(4, id="running")])
def test_without_metrics_the_replicas_are_kept(current: int) -> None:
    # Given a broker that cannot be read (an outage)
    # When the autoscaler decides
    decision = desired_replicas(_policy(), current=current, load=None, history=[_seen(100, 0)], now_s=NOW_S)

    # Then nothing changes, not even down to zero, and nothing goes into the history
    assert (decision.replicas, decision.reason) == (current, "NoMetrics")
    assert decision.recommendation is None


@pytest.mark.parametrize(
    ("policy", "load"),
    [
        pytest.param(_policy(), Load(500, 20), id="autoscaling with a busy queue"),
        pytest.param(_policy(min_replicas=3), Load(0, 0), id="autoscaling with minReplicas"),
        pytest.param(_policy(enabled=False), Load(0, 0), id="autoscaling disabled"),
        pytest.param(_policy(), None, id="without metrics"),
    ],
)
def test_a_paused_queue_runs_no_workers(policy: ScalingPolicy, load: Load | None) -> None:
    decision = desired_replicas(policy, current=4, load=load, paused=True, fixed_replicas=2)

    assert (decision.replicas, decision.reason) == (0, "Paused")


@pytest.mark.parametrize(
    ("load", "fixed_replicas"),
    [
        pytest.param(Load(500, 20), 2, id="busy queue: still the fixed count"),
        pytest.param(Load(0, 0), 3, id="idle queue: still the fixed count"),
        pytest.param(None, 0, id="without metrics: the fixed count, even zero"),
    ],
)
def test_with_autoscaling_disabled_the_fixed_replicas_run(load: Load | None, fixed_replicas: int) -> None:
    decision = desired_replicas(_policy(enabled=False), current=4, load=load, fixed_replicas=fixed_replicas)

    assert (decision.replicas, decision.reason) == (fixed_replicas, "AutoscalingDisabled")
    assert f"spec.replicas={fixed_replicas}" in decision.message


def test_a_load_totals_ready_and_in_flight_messages() -> None:
    assert Load(ready=7, in_flight=3).total == 10
    assert Load(ready=7, in_flight=None).total == 7


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        pytest.param({"min_replicas": 5, "max_replicas": 2}, r"minReplicas \(5\)", id="minReplicas above maxReplicas"),
        pytest.param({"min_replicas": -1}, "minReplicas", id="negative minReplicas"),
        pytest.param({"target_per_replica": 0}, "targetPerReplica", id="zero targetPerReplica"),
        pytest.param({"activation_threshold": 0}, "activationThreshold", id="zero activationThreshold"),
        pytest.param({"poll_interval_s": 0.0}, "pollIntervalSeconds", id="zero pollIntervalSeconds"),
        pytest.param({"scale_up_max_step": 0}, "scale step", id="zero scaleUp step"),
        pytest.param({"scale_down_max_step": 0}, "scale step", id="zero scaleDown step"),
    ],
)
def test_a_scaling_policy_rejects_impossible_settings(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _policy(**overrides)


def test_a_scaling_policy_accepts_min_equal_to_max() -> None:
    assert ScalingPolicy(min_replicas=3, max_replicas=3).min_replicas == 3
