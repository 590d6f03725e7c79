"""Framework integrations: ``taskfleet.contrib.django``, ``taskfleet.contrib.flask`` and ``taskfleet.contrib.otel``
(OpenTelemetry tracing)."""
