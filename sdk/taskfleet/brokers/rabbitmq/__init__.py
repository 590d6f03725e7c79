"""The RabbitMQ broker, beat store and fleet store (pika): durable queues, persistent messages, publisher confirms,
a delay ladder.

Only ``RabbitMQBroker``, ``RabbitMQBeatStore`` and ``RabbitMQFleetStore`` are public; the modules below are private
to this package:

- ``_broker``: ``RabbitMQBroker``, how the ``Broker`` contract maps onto AMQP, publishing and administration;
- ``_consumer``: the broker's consumers, the deliveries they receive and how each one is settled;
- ``_topology``: names and layout of queues and exchanges (the delay ladder), and declaring them;
- ``_link``: one pika connection per process, driven by the thread that needs it or by an I/O thread;
- ``_publisher``: pipelined publishing with publisher confirms, on pika internals (fenced by
  tests/unit/test_pika_internals.py);
- ``_frames``: the bytes of a ``basic.publish``, packed directly (checked byte for byte against pika);
- ``_output``: writing those bytes to pika's output buffer and pumping a channel with a deadline (pika internals,
  shared by ``_publisher`` and ``_appender``);
- ``_window``: the windowed publishes RabbitMQ has not confirmed yet;
- ``_dead_letters``: browsing dead-letter queues and moving their messages back;
- ``_unread``: the deliveries in what a dead worker child's connection received and never read;
- ``_management``: a client of the management HTTP API (queue counts and names);
- ``_beat``: ``RabbitMQBeatStore``;
- ``_fleet``: ``RabbitMQFleetStore``, an app's fleet state (control exchange, reply queues, streams);
- ``_streams``: the fleet store's stream queues and reading one to its end;
- ``_appender``: writing to them a window ahead of RabbitMQ's confirms.
"""

from __future__ import annotations

from taskfleet.brokers.rabbitmq._beat import RabbitMQBeatStore
from taskfleet.brokers.rabbitmq._broker import RabbitMQBroker
from taskfleet.brokers.rabbitmq._fleet import RabbitMQFleetStore

__all__ = ["RabbitMQBeatStore", "RabbitMQBroker", "RabbitMQFleetStore"]
