"""Errors a user can cause. Each message is one line that says what was wrong and what to do.

The CLI prints `error: <message>` and exits non-zero for these; anything else is a bug.
"""


class CxrlmError(Exception):
    """Base class: a user-facing problem with a one-line, actionable message."""

    exit_code = 2


class InputError(CxrlmError):
    """An input file (image, DICOM, CSV, manifest) cannot be used."""


class ModelLoadError(CxrlmError):
    """A model folder is missing, unreadable or of an unsupported family."""


class ConfigError(CxrlmError):
    """A recipe, option or combination of options is invalid."""
