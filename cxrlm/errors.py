"""Errors a user can cause. Each message is one line that says what was wrong and what to do.

The CLI prints `error: <message>` and exits non-zero for these; anything else is a bug. Messages may quote
values read from a file, so every message goes through `one_line`: control characters escaped, length capped.
"""

MESSAGE_LIMIT = 500  # characters: room for a list of valid choices, never for a file's content
QUOTE_LIMIT = 40  # characters of a value read from a file, when a message quotes one


def one_line(text, limit: int = MESSAGE_LIMIT) -> str:
    """`text` as one printable line of at most `limit` characters: newlines, escapes and NULs become \\n, \\x1b ..."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """A value from a file, safe to put in a message or warning (one line, short)."""
    return one_line(value, limit)


class CxrlmError(Exception):
    """Base class: a user-facing problem with a one-line, actionable message."""

    exit_code = 2

    def __init__(self, message: str = ""):
        super().__init__(one_line(message))


class InputError(CxrlmError):
    """An input file (image, DICOM, CSV, manifest) cannot be used."""


class ModelLoadError(CxrlmError):
    """A model folder is missing, unreadable or of an unsupported family."""


class ConfigError(CxrlmError):
    """A recipe, option or combination of options is invalid."""
