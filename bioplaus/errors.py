"""User-facing errors: each carries one line that the CLI prints before exiting with code 2."""

from __future__ import annotations


class BioplausError(Exception):
    """Base of every error whose message is meant for the user, not a traceback."""


class ConfigError(BioplausError):
    """A configuration value is missing, unknown or of the wrong type; the message names it."""


class DataError(BioplausError):
    """A data set is missing or malformed; the message names the data set or file."""


class RunError(BioplausError):
    """A run could not go on (NaN loss, diverging weights); the message names the step."""
