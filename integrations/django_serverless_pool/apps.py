"""The app for ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["ServerlessPoolConfig"]


class ServerlessPoolConfig(AppConfig):
    """Registers the system checks; pools are built lazily, never here."""

    name = "django_serverless_pool"
    verbose_name = "serverless-pool"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Registers the checks (the @register decorators run at import).
        from . import checks  # noqa: F401

        # Connects the setting_changed receiver and the fork hook.
        from .backends.postgresql import pools  # noqa: F401
