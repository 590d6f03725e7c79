"""The Django apps whose ``tasks`` modules ``App.autodiscover_tasks()`` imports."""

from __future__ import annotations

from django.apps import apps
from django.core.exceptions import AppRegistryNotReady, ImproperlyConfigured

from taskfleet.errors import ConfigurationError


def installed_apps() -> list[str]:
    """The package names of the apps in ``INSTALLED_APPS`` (``AppConfig.name``, e.g. ``"orders"`` or
    ``"django.contrib.auth"``), in their order. Django must be set up (``django.setup()``; the worker does it when
    ``DJANGO_SETTINGS_MODULE`` is set), else ``ConfigurationError``."""
    try:
        return [config.name for config in apps.get_app_configs()]
    except (AppRegistryNotReady, ImproperlyConfigured) as exc:
        raise ConfigurationError(
            f"Django's apps are not loaded, so INSTALLED_APPS cannot be searched for tasks ({exc}): call "
            "django.setup() first (taskfleet worker does when DJANGO_SETTINGS_MODULE is set)") from exc
