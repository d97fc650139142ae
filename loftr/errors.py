"""The project's error types: each message names the file, key or value at fault and what to do."""

from __future__ import annotations


class LoFTRError(Exception):
    """Base class of the errors this project raises on purpose."""


class ConfigError(LoFTRError, ValueError):
    """An invalid configuration value or combination; the message names the key(s)."""


class DataError(LoFTRError, RuntimeError):
    """Missing, broken or malformed data; the message names the path and the step that makes it."""


class CheckpointError(LoFTRError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names the keys."""


class NonFiniteError(LoFTRError, RuntimeError):
    """Training produced non-finite losses or gradients too many steps in a row."""
