"""The part of the ``Broker`` specification that a quorum queue could change, run on RabbitMQ with quorum task queues
(``rabbitmq-quorum``): consuming and acking, redelivery counting (a quorum queue returns and flags deliveries in
its own way), release, nack, dead-lettering, delays arriving through the ladder and fair service. Only priorities
differ, and a quorum queue refuses them (test_rabbitmq_quorum.py). The rest of the specification passes there too
(checked by hand: add "rabbitmq-quorum" to CONFORMANCE_KIND_NAMES), but would cost two minutes of suite time."""

from __future__ import annotations

import pytest

from tests.integration.test_broker_conformance import (  # the fixture and the specifications, reused as they are
    broker,
    test_a_delayed_message_is_fetched_within_a_second_of_being_due,
    test_a_delivery_held_by_a_consumer_that_goes_away_is_delivered_again_and_counted,
    test_a_message_delivered_max_deliveries_times_without_an_ack_is_dead_lettered,
    test_a_nacked_message_is_ready_again_with_its_delivery_counted,
    test_a_released_message_is_delivered_again_without_counting_the_delivery,
    test_an_enqueued_message_is_fetched_and_then_deleted_by_ack,
    test_several_queues_are_served_fairly,
)

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_kind", ["rabbitmq-quorum"], indirect=True)]

__all__ = [
    "broker",
    "test_a_delayed_message_is_fetched_within_a_second_of_being_due",
    "test_a_delivery_held_by_a_consumer_that_goes_away_is_delivered_again_and_counted",
    "test_a_message_delivered_max_deliveries_times_without_an_ack_is_dead_lettered",
    "test_a_nacked_message_is_ready_again_with_its_delivery_counted",
    "test_a_released_message_is_delivered_again_without_counting_the_delivery",
    "test_an_enqueued_message_is_fetched_and_then_deleted_by_ack",
    "test_several_queues_are_served_fairly",
]
