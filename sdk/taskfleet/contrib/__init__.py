"""Framework integrations: ``taskfleet.contrib.django`` and ``taskfleet.contrib.flask``."""
