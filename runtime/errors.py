"""The errors the start-up boundary (runtime.startup) turns into exit codes."""

from runtime.config import ConfigError

__all__ = ["ConfigError", "ServiceFatalError"]


class ServiceFatalError(Exception):
    """The service cannot go on (its state directory or sink is unusable for good): logged in
    one line by the start-up boundary, which exits 1 so that systemd may restart it."""
