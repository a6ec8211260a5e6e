"""The installed sarchive version, as producers stamp it into every event."""

from importlib import metadata

try:
    VERSION = metadata.version("sarchive")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    VERSION = "0+unknown"
