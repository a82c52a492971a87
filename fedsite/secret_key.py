"""Is a SECRET_KEY strong enough to sign sessions, CSRF tokens and password resets?

Plain Python (settings import it before Django is set up). Production refuses to
start with a weak key (fedsite/settings.py), and `manage.py check --deploy`
reports one as an error (fedsite.E001, apps.core.checks) in any environment.
"""

from __future__ import annotations

import math
from collections import Counter

MIN_LENGTH = 50
MIN_DISTINCT = 10
MIN_BITS = 128
RUN = 8
# Words that say a human typed or copied the key rather than generating it.
PLACEHOLDERS = ("changeme", "change-me", "change_me", "insecure", "example", "default", "secret", "password", "dummy")
GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(64))"'


def secret_key_weakness(key: str) -> str | None:
    """Why `key` is weak, or None. Generated keys (token_urlsafe(64), token_hex(32) and longer) pass."""
    if len(key) < MIN_LENGTH:
        return f"it has {len(key)} characters; use at least {MIN_LENGTH}"
    if len(set(key)) < MIN_DISTINCT:
        return f"it uses only {len(set(key))} distinct characters"
    lowered = key.lower()
    if lowered.startswith("django-insecure"):
        return "it is Django's development key (django-insecure-…)"
    for word in PLACEHOLDERS:
        if word in lowered:
            return f"it contains {word!r}, a placeholder rather than a generated key"
    # Low entropy: a repeated stretch or a run (abcdefgh, 98765432) is never in a generated key of this length
    # (for token_hex(32) the chance is below one in a million), and the characters' spread must carry 128 bits.
    for i in range(len(key) - RUN + 1):
        chunk = key[i : i + RUN]
        if key.find(chunk, i + 1) >= 0:
            return f"it repeats a stretch of {RUN} characters"  # never quote the key: messages reach logs
        steps = {ord(b) - ord(a) for a, b in zip(chunk, chunk[1:], strict=False)}
        if steps in ({1}, {-1}, {0}):
            return f"it holds a run of {RUN} characters (like abcdefgh)"
    counts = Counter(key)
    bits = -sum(n * math.log2(n / len(key)) for n in counts.values())
    if bits < MIN_BITS:
        return f"its characters carry about {bits:.0f} bits; a generated key has far more"
    return None


def weak_key_message(weakness: str) -> str:
    return f"SECRET_KEY is weak: {weakness}. Generate one: {GENERATE}"
