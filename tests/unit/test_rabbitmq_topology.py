"""Specification of the RabbitMQ layout (taskfleet.brokers.rabbitmq._topology): names, the delay ladder's routing
keys and patterns. Pure functions; the behaviour on a real server is in the broker conformance suite."""

from __future__ import annotations

import re

import pytest

from taskfleet.brokers.rabbitmq import _topology as topo
from taskfleet.errors import ConfigurationError


def _matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    words = pattern.split(".")
    regex = r"\.".join(r"[^.]+" if w == "*" else r".*" if w == "#" else re.escape(w) for w in words)
    regex = regex.replace(r"\..*", r"(\..*)?")
    return re.fullmatch(regex, key) is not None


@pytest.mark.parametrize(("delay_s", "units"), [
    (0.0, 0), (0.04, 0), (0.05, 0), (0.06, 1), (0.1, 1), (1.0, 10), (1.26, 13), (60.0, 600),
    (7 * 24 * 3600.0, 6_048_000), (-3.0, 0),
])
def test_delays_are_rounded_to_tenths_of_a_second(delay_s: float, units: int) -> None:
    assert topo.delay_units(delay_s) == units


@pytest.mark.parametrize("delay_s", [topo.MAX_DELAY_S + 1, float("nan"), float("inf")])
def test_a_delay_beyond_the_ladder_is_refused(delay_s: float) -> None:
    with pytest.raises(ValueError, match="maximum"):
        topo.delay_units(delay_s)


def test_seven_days_fit_on_the_ladder() -> None:
    assert topo.MAX_DELAY_S >= 7 * 24 * 3600


@pytest.mark.parametrize(("units", "bits"), [
    (1, "0" * 22 + "1"),
    (2, "0" * 21 + "10"),
    (13, "0" * 19 + "1101"),
    (2**23 - 1, "1" * 23),
])
def test_the_routing_key_spells_the_delay_in_binary_highest_level_first(units: int, bits: str) -> None:
    assert topo.delay_routing_key(units, "billing") == ".".join(bits) + ".billing"


@pytest.mark.parametrize("units", [0, 2**23])
def test_a_routing_key_needs_a_delay_the_ladder_can_hold(units: int) -> None:
    with pytest.raises(ValueError, match="delay units"):
        topo.delay_routing_key(units, "q")


@pytest.mark.parametrize("units", [1, 5, 13, 600, 6_048_000, 2**23 - 1])
def test_a_message_walks_exactly_the_levels_of_its_set_bits_and_their_ttls_add_up_to_the_delay(units: int) -> None:
    key = topo.delay_routing_key(units, "q")
    levels = {rung.level: rung for rung in topo.ladder()}
    visited = [level for level in levels if _matches(topo.level_pattern(level, "1"), key)]
    skipped = [level for level in levels if _matches(topo.level_pattern(level, "0"), key)]

    assert sorted(visited + skipped) == list(range(topo.DELAY_LEVELS))
    assert sum(levels[level].ttl_ms for level in visited) == units * 100


def test_each_level_hands_expired_messages_to_the_level_below_and_level_zero_to_delivery() -> None:
    rungs = list(topo.ladder())
    assert [r.level for r in rungs] == list(range(topo.DELAY_LEVELS))
    assert rungs[0].next_exchange == topo.DELIVER_EXCHANGE
    assert all(r.next_exchange == topo.delay_level_name(r.level - 1) for r in rungs[1:])
    assert rungs[3].ttl_ms == 800


@pytest.mark.parametrize(("queue", "other"), [("b.c", "a.b.c"), ("c", "b.c"), ("billing", "billing.slow")])
def test_the_deliver_binding_of_a_queue_matches_only_its_own_routing_keys(queue: str, other: str) -> None:
    pattern = topo.deliver_pattern(queue)
    assert _matches(pattern, topo.delay_routing_key(5, queue))
    assert not _matches(pattern, topo.delay_routing_key(5, other))


def test_the_longest_queue_name_still_fits_an_amqp_routing_key() -> None:
    assert len(topo.delay_routing_key(1, "q" * 200).encode()) <= 255


@pytest.mark.parametrize("name", ["taskfleet.dead.x", "taskfleet.delay.3", "", "a b", "{x}"])
def test_reserved_and_invalid_queue_names_are_configuration_errors(name: str) -> None:
    with pytest.raises(ConfigurationError):
        topo.task_queue_name(name)


def test_every_queue_has_its_own_dead_letter_queue_under_the_reserved_prefix() -> None:
    assert topo.dead_queue_name("billing") == "taskfleet.dead.billing"
    assert topo.TASK_QUEUE_ARGUMENTS == {"x-max-priority": 9}
