"""Exception types shared by every stage.

Each error names the file (when there is one) and the reason, so a CLI can print it as is.
"""

from __future__ import annotations

from pathlib import Path


class MammocadError(Exception):
    """Base class: an error a user can act on, with a message fit to print."""


class ImageReadError(MammocadError):
    """An image file could not be read (missing, corrupt, truncated, wrong type, absurd size)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Picklable (worker processes send errors back): rebuilt from its two fields, not the message.
        return (type(self), (self.path, self.reason))


class DatasetError(MammocadError):
    """A dataset directory, manifest or import source is unusable as a whole."""


class ConfigError(MammocadError):
    """A configuration does not validate; the message names the field and why."""
