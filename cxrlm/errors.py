"""Errors a user can cause. Each message is one line that says what was wrong and what to do.

The CLI prints `error: <message>` and exits non-zero for these; anything else is a bug. Messages may quote
values read from a file, so every message goes through `one_line`: control characters escaped, length capped.
"""

import warnings
from contextlib import contextmanager

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
        if "\nOriginal Traceback" in message:  # re-raised by a torch DataLoader worker: keep the user's own line
            message = message.strip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(one_line(message))


class InputError(CxrlmError):
    """An input file (image, DICOM, CSV, manifest) cannot be used."""


class ModelLoadError(CxrlmError):
    """A model folder is missing, unreadable or of an unsupported family."""


class ConfigError(CxrlmError):
    """A recipe, option or combination of options is invalid."""


LIBRARY_WARNINGS = 3  # at most this many of a decoding library's warnings are kept, one short line each


@contextmanager
def library_warnings(notes: list[str], library: str):
    """Turn the Python warnings a decoding library raises inside the block into `notes` (one short line each,
    at most LIBRARY_WARNINGS), instead of lines on stderr. Their text may quote file values: `quote` bounds it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    lines = list(dict.fromkeys(quote(str(w.message).strip(), 160) for w in caught))
    notes.extend(f"{library}: {line}" for line in lines[:LIBRARY_WARNINGS])
    if len(lines) > LIBRARY_WARNINGS:
        notes.append(f"{library}: {len(lines) - LIBRARY_WARNINGS} more warning(s)")
