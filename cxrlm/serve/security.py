"""Who may call the server and how often: API-key checks, the loopback rule, and per-key rate limits.

Keys are created with `cxrlm serve --add-key NAME` and stored hashed (storage.py). When the server listens beyond
loopback, or once any key exists, every /v1 request needs `Authorization: Bearer <key>`; on loopback with no key
configured, requests run as the key id "local". Not here: CORS (off unless --cors-origin is given, see app.py).
"""

import ipaddress
import math
import threading
import time

from cxrlm.errors import ConfigError

LOCAL_KEY_ID = "local"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere, so treat it as public
        return False


def check_exposure(host: str, has_keys: bool) -> None:
    """Refuse to listen beyond loopback without API keys."""
    if not is_loopback(host) and not has_keys:
        raise ConfigError(
            f"refusing to listen on {host} without API keys: create one with `cxrlm serve --add-key NAME` "
            "(same --db), or listen on 127.0.0.1"
        )


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, last refill time)
        self._lock = threading.Lock()

    def acquire(self, key_id: str) -> float:
        """0 when the request may go ahead, else the seconds to wait before retrying."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(key_id, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
