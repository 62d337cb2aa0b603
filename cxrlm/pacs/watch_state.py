"""What `cxrlm pacs watch` remembers between polls and across crashes: one SQLite file (WAL), one row per study.

A study is keyed by HMAC-SHA256 of its StudyInstanceUID under a random secret kept in the same file, so the file
holds no identifier (not even the UID: a plain hash of a UID could be matched against a PACS by anyone holding
both); without the file's secret the keys say nothing. Nothing else identifying is stored: a refusal or error is
kept as its one-line reason with every UID in it blanked out (`scrub`).

A study's life: `running` (claimed: the attempt is counted before any work, so a study that crashes the process
is not retried forever) -> `done` (its SR is in the PACS) | `refused` (the input gate or the reader said no: not
retried) | `retry` (an error: tried again after `next_try`) | `failed` (`max_attempts` used up: reported, not
retried). A `running` row left by a killed process is taken up again by the next claim.

One watcher per state file: an exclusive lock on STATE.lock (released by the OS when the process dies, kill -9
included) keeps a second one out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cxrlm.errors import ConfigError, one_line

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    key TEXT PRIMARY KEY,               -- HMAC of the StudyInstanceUID: never the UID itself
    state TEXT NOT NULL,                -- running, done, refused, retry, failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,   -- unix time before which a `retry` study waits
    reason TEXT,                        -- one line: why refused, or the last error
    updated REAL NOT NULL
);
"""
FINAL = ("done", "refused", "failed")  # states never worked on again
REASON_LIMIT = 300  # characters of a stored reason
UID_PATTERN = re.compile(r"\d+(?:\.\d+){3,}")  # a DICOM UID: 4+ numeric components (not a version, not a score)


@dataclass(frozen=True)
class Row:
    key: str
    state: str
    attempts: int
    next_try: float
    reason: str | None


class WatchState:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = _exclusive_lock(self.path.with_name(self.path.name + ".lock"))
            self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: each statement is durable
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a `done` row survives a power cut, not only a kill
            self.db.executescript(SCHEMA)
            self._secret = self._load_secret()
            os.chmod(self.path, 0o600)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"cannot use {self.path} as the watch state ({type(err).__name__}: {err}): give a "
                              "writable --state FILE") from None

    def _load_secret(self) -> bytes:
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('hmac_secret', ?)", (secrets.token_hex(32),))
        return bytes.fromhex(self.db.execute("SELECT value FROM meta WHERE name='hmac_secret'").fetchone()[0])

    def key(self, study_uid: str) -> str:
        return hmac.new(self._secret, study_uid.encode(), hashlib.sha256).hexdigest()

    def row(self, key: str) -> Row | None:
        found = self.db.execute("SELECT key, state, attempts, next_try, reason FROM studies WHERE key=?",
                                (key,)).fetchone()
        return Row(*found) if found else None

    def is_due(self, key: str, now: float | None = None) -> bool:
        """Not final, and not waiting for its retry time."""
        row = self.row(key)
        return row is None or (row.state not in FINAL and row.next_try <= (now or time.time()))

    def claim(self, key: str) -> int:
        """Mark the study `running` and count the attempt (before any work); returns the attempt number."""
        now = time.time()
        self.db.execute("INSERT INTO studies (key, state, attempts, updated) VALUES (?, 'running', 1, ?) "
                        "ON CONFLICT(key) DO UPDATE SET state='running', attempts=attempts+1, updated=?",
                        (key, now, now))
        return self.row(key).attempts

    def done(self, key: str) -> None:
        self._set(key, "done", None)

    def refused(self, key: str, reason: str) -> None:
        self._set(key, "refused", reason)

    def failed(self, key: str, reason: str) -> None:
        self._set(key, "failed", reason)

    def retry(self, key: str, reason: str, delay: float, max_attempts: int) -> str:
        """After an error: `retry` in `delay` seconds, or `failed` once `max_attempts` are used up."""
        state = "failed" if self.row(key).attempts >= max_attempts else "retry"
        self._set(key, state, reason, time.time() + delay)
        return state

    def release(self, key: str, delay: float) -> None:
        """Give the claim back without counting it (the PACS was unreachable: not this study's fault)."""
        self.db.execute("UPDATE studies SET state='retry', attempts=MAX(attempts-1, 0), next_try=?, updated=? "
                        "WHERE key=?", (time.time() + delay, time.time(), key))

    def retry_failed(self) -> int:
        """Give every failed study a new round of attempts (after the operator fixed the cause)."""
        return self.db.execute("UPDATE studies SET state='retry', attempts=0, next_try=0 WHERE state='failed'").rowcount

    def _set(self, key: str, state: str, reason: str | None, next_try: float = 0.0) -> None:
        reason = scrub(reason) if reason else None
        self.db.execute("UPDATE studies SET state=?, reason=?, next_try=?, updated=? WHERE key=?",
                        (state, reason, next_try, time.time(), key))

    def next_retry(self) -> float | None:
        """When the earliest waiting retry falls due (unix time), or None."""
        return self.db.execute("SELECT MIN(next_try) FROM studies WHERE state='retry'").fetchone()[0]

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall())

    def problems(self) -> list[Row]:
        """Refused and failed studies with their reasons (keys only: the operator looks a study up by its UID)."""
        found = self.db.execute("SELECT key, state, attempts, next_try, reason FROM studies "
                                "WHERE state IN ('refused', 'failed') ORDER BY updated").fetchall()
        return [Row(*r) for r in found]

    def close(self) -> None:
        self.db.close()
        self._lock.close()


def _exclusive_lock(path: Path):
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115 - held open for the state's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"another `cxrlm pacs watch` is using {path.with_suffix('')}: stop it, or give this one "
                          "its own --state") from None
    return handle


def scrub(text: str) -> str:
    """A reason fit to store or print: every DICOM UID in it (an error's URL names the study) blanked out, one line."""
    return one_line(UID_PATTERN.sub("<uid>", str(text)), REASON_LIMIT)


def read_counts(path: Path) -> dict[str, int]:
    """The state's counts without taking the watcher's lock (for status and tests, read-only)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall())
