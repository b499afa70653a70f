"""Domain errors of etem-tracker, in one place.

Every error says what was wrong and, where it can, how to fix it.
"""
from __future__ import annotations


class EtemError(Exception):
    """Base class of all etem-tracker errors."""


class ConfigError(EtemError, ValueError):
    """A configuration value or command-line option is invalid."""


class SamplingUnknown(ConfigError):
    """What the frames are to be run through needs their pixel size, and they do not give it."""


class WireError(EtemError, ValueError):
    """A ZeroMQ message does not follow the frame wire format.

    ``reason`` is a short machine-readable key (``bad_json``, ``payload_size`` …) under which
    the rejection is counted; ``field``, the header field at fault (None: the message as a
    whole), so that a live source can say each fault once.
    """

    def __init__(self, reason: str, message: str, field: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.field = field


class FileFormatError(EtemError, OSError):
    """A recorded file cannot be read: it is missing, corrupt, truncated or of an unknown format.

    The message names the file and, where known, the position.
    """


class EngineUnavailable(EtemError, RuntimeError):
    """An explicitly requested engine cannot run here; the message says what to install."""


class ModelError(EtemError, ValueError):
    """A model bundle is missing, malformed or does not match its card."""


def choice_error(name: str, value: object, valid) -> ConfigError:
    """A ConfigError for a string option outside its valid set, listing the valid ones."""
    valid = sorted(valid)
    return ConfigError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}.")
