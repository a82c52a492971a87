"""Counting failures (wrong passwords, wrong tokens, refused names) in the cache, and refusing past a limit.

A fixed window per scope: each failure adds one to a counter keyed by the scope,
the window's number and a hash of who failed (client address, username, user);
once any counter reaches its limit, every attempt of that kind is refused until
the window ends — a correct password or token too, or the refusals themselves
would tell a guesser when it was right. The cache is shared by every web
process (Redis in production, `CACHE_URL`), so the count is the installation's.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache


def client_ip(request: Any) -> str:
    """The client's address: REMOTE_ADDR, or X-Forwarded-For as set by `FEDSITE_TRUSTED_PROXIES` proxies."""
    proxies = int(getattr(settings, "FEDSITE_TRUSTED_PROXIES", 0))
    remote = str(request.META.get("REMOTE_ADDR", "") or "")
    if proxies <= 0:
        return remote
    hops = [h.strip() for h in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if h.strip()]
    # Each trusted proxy appended the address it saw; anything further left the client could have forged.
    return hops[-proxies] if len(hops) >= proxies else remote


@dataclass(frozen=True)
class FailureThrottle:
    """At most `limit` failures per `window_s` seconds for each identity of a scope."""

    scope: str
    limit: int
    window_s: int

    def _key(self, kind: str, ident: str, window: int) -> str:
        digest = hashlib.sha256(f"{kind}\0{ident}".encode()).hexdigest()[:32]
        return f"fedsite:throttle:{self.scope}:{window}:{digest}"

    def _window(self) -> tuple[int, int]:
        """(this window's number, seconds until it ends)."""
        now = time.time()
        return int(now // self.window_s), max(1, int(self.window_s - now % self.window_s))

    def retry_after(self, *idents: tuple[str, str], limits: dict[str, int] | None = None) -> int:
        """Seconds to wait if any (kind, identity) has reached its limit in this window, else 0."""
        window, left = self._window()
        keys = {self._key(kind, ident, window): (limits or {}).get(kind, self.limit) for kind, ident in idents}
        counts = cache.get_many(list(keys))
        return left if any(int(counts.get(key) or 0) >= limit for key, limit in keys.items()) else 0

    def fail(self, *idents: tuple[str, str]) -> None:
        window, _ = self._window()
        for kind, ident in idents:
            key = self._key(kind, ident, window)
            # The key names its window, so a backend resetting the expiry on incr cannot stretch it.
            if not cache.add(key, 1, timeout=self.window_s + 1):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.set(key, 1, timeout=self.window_s + 1)

    def clear(self, kind: str, ident: str) -> None:
        window, _ = self._window()
        cache.delete(self._key(kind, ident, window))


def login_throttle() -> FailureThrottle:
    """Dashboard and admin sign-ins: `FEDSITE_LOGIN_FAILURE_LIMIT` per client address per window."""
    return FailureThrottle("login", settings.FEDSITE_LOGIN_FAILURE_LIMIT, settings.FEDSITE_AUTH_FAILURE_WINDOW_S)


def token_throttle() -> FailureThrottle:
    """API tokens: `FEDSITE_TOKEN_FAILURE_LIMIT` wrong tokens per client address per window."""
    return FailureThrottle("token", settings.FEDSITE_TOKEN_FAILURE_LIMIT, settings.FEDSITE_AUTH_FAILURE_WINDOW_S)


def name_throttle() -> FailureThrottle:
    """Refused workspace slugs and unknown usernames, per user: what one may ask about names that exist."""
    return FailureThrottle("names", settings.FEDSITE_LOGIN_FAILURE_LIMIT, settings.FEDSITE_AUTH_FAILURE_WINDOW_S)


# A username may fail this many times more than one address, across all addresses: a guesser spread
# over many addresses is slowed too, while one person mistyping cannot lock someone else out quickly.
USERNAME_FACTOR = 5


def minutes(seconds: int) -> str:
    m = max(1, round(seconds / 60))
    return f"{m} minute{'s' if m != 1 else ''}"
