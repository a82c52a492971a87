"""The PSI cryptography, as batch functions that run in the process pool.

Every function takes and returns plain bytes/lists so it pickles cheaply; keys
travel as small tuples. Values are fixed-width and concatenated:

* ECDH: 32-byte X25519 u-coordinates (RFC 7748).
* RSA: ``k``-byte big-endian integers modulo ``n`` for blinded values and
  signatures; the final comparison values are 16-byte BLAKE2b digests.

X25519 goes through ``cryptography`` (OpenSSL) or, where the system's libsodium
is loadable, its ``crypto_scalarmult``: the same RFC 7748 function (the two
sides may use either; tests check they agree). Which one is faster depends on
the machine (their speeds differ by 10-15 % either way on machines of one kind),
so each process times both once and uses the faster; ``FEDSITE_PSI_X25519``
(``libsodium`` or ``cryptography``) fixes the choice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import secrets
import time

import gmpy2
import numpy as np

from runtime.psi.h2c import SUITE_NU, HashToCurve

POINT = 32  # bytes per ECDH value
DIGEST = 16  # bytes per final comparison value (collisions ~ n^2 / 2^129)


class CryptoError(ValueError):
    """A peer sent a value the protocol cannot use (small-order point, out of range)."""


# -- X25519 backends ---------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _sodium():
    if os.environ.get("FEDSITE_PSI_NO_SODIUM"):
        return None
    name = ctypes.util.find_library("sodium")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        if lib.sodium_init() < 0:
            return None
        fn = lib.crypto_scalarmult_curve25519
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def x25519_backend() -> str:
    """The X25519 backend this process uses: the faster here, timed once on a few points."""
    forced = os.environ.get("FEDSITE_PSI_X25519", "")
    if _sodium() is None or forced == "cryptography":
        return "cryptography"
    if forced == "libsodium":
        return "libsodium"
    scalar, points = new_ecdh_key(), b"".join(new_ecdh_key() for _ in range(64))
    best = {}
    for backend in ("libsodium", "cryptography"):
        t = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            x25519_many(scalar, points, backend)
            t = min(t, time.perf_counter() - t0)
        best[backend] = t
    return min(best, key=best.__getitem__)


def x25519_many(scalar: bytes, points: bytes, backend: str | None = None) -> bytes:
    """X25519(scalar, u) for each 32-byte u in `points`, concatenated."""
    n = len(points) // POINT
    if len(points) != n * POINT:
        raise CryptoError("ECDH batch length is not a multiple of 32 bytes")
    sodium = _sodium() if (backend or x25519_backend()) == "libsodium" else None
    if sodium is not None:
        out = ctypes.create_string_buffer(POINT)
        parts = []
        mv = memoryview(points)
        for i in range(n):
            if sodium(out, scalar, bytes(mv[i * POINT : (i + 1) * POINT])) != 0:
                raise CryptoError("peer sent a small-order point")
            parts.append(out.raw)
        return b"".join(parts)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    key = X25519PrivateKey.from_private_bytes(scalar)
    parts = []
    for i in range(n):
        try:
            parts.append(key.exchange(X25519PublicKey.from_public_bytes(points[i * POINT : (i + 1) * POINT])))
        except ValueError:
            raise CryptoError("peer sent a small-order point") from None
    return b"".join(parts)


# -- ECDH-PSI ----------------------------------------------------------------------


def new_ecdh_key() -> bytes:
    return secrets.token_bytes(32)


@functools.lru_cache(maxsize=4)
def _h2c(suite: str) -> HashToCurve:
    return HashToCurve(suite)


def ecdh_encrypt_ids(scalar: bytes, ids: list[str], suite: str = SUITE_NU) -> bytes:
    """X25519(k, H(id)) for this side's own ids."""
    h = _h2c(suite)
    return x25519_many(scalar, b"".join(h(i.encode("utf-8")) for i in ids))


def ecdh_reencrypt(scalar: bytes, points: bytes) -> bytes:
    """X25519(k, v) for the partner's values; the result is the shared value."""
    return x25519_many(scalar, points)


def ecdh_final(values: bytes) -> bytes:
    """The comparison value: first 16 bytes of each doubly-encrypted point."""
    return np.frombuffer(values, dtype=np.uint8).reshape(-1, POINT)[:, :DIGEST].tobytes()


# -- RSA blind-signature PSI ---------------------------------------------------------


def _random_prime(bits: int):
    while True:
        cand = gmpy2.mpz(secrets.randbits(bits)) | (gmpy2.mpz(3) << (bits - 2)) | 1
        p = gmpy2.next_prime(cand)
        if gmpy2.bit_length(p) == bits and gmpy2.gcd(p - 1, 65537) == 1:
            return p


def new_rsa_key(bits: int = 2048, primes: int = 3) -> tuple:
    """A fresh RSA key (multi-prime, RFC 8017 §3) as a picklable tuple (n, e, (p_i...), (d_i...))."""
    if bits < 1024 or primes < 2:
        raise ValueError("rsa_bits must be >= 1024 and rsa_primes >= 2")
    e = gmpy2.mpz(65537)
    while True:
        sizes = [bits // primes + (1 if i < bits % primes else 0) for i in range(primes)]
        ps = [_random_prime(s) for s in sizes]
        n = functools.reduce(lambda a, b: a * b, ps)
        if len(set(ps)) == primes and gmpy2.bit_length(n) == bits:
            break
    ds = [gmpy2.invert(e, p - 1) for p in ps]
    return (int(n), int(e), tuple(int(p) for p in ps), tuple(int(d) for d in ds))


def rsa_public(key: tuple) -> tuple[int, int]:
    return key[0], key[1]


@functools.lru_cache(maxsize=4)
def _crt(key: tuple):
    n, _e, ps, ds = key
    n = gmpy2.mpz(n)
    ps = [gmpy2.mpz(p) for p in ps]
    ds = [gmpy2.mpz(d) for d in ds]
    coeffs = []
    for p in ps:
        m = n // p
        coeffs.append((m * gmpy2.invert(m % p, p)) % n)
    return n, ps, ds, coeffs


def _nbytes(n: int) -> int:
    return (int(n).bit_length() + 7) // 8


def _fdh(n, k: int, ident: str):
    """Full-domain hash of an id into Z_n (SHAKE-256, 128 extra bits before reduction)."""
    return (
        gmpy2.mpz(
            int.from_bytes(hashlib.shake_256(b"FEDSITE-PSI-RSA-FDH\x00" + ident.encode("utf-8")).digest(k + 16), "big")
        )
        % n
    )


def _sign(crt, m):
    n, ps, ds, coeffs = crt
    s = 0
    for p, d, c in zip(ps, ds, coeffs, strict=True):
        s += gmpy2.powmod(m % p, d, p) * c
    return s % n


def _final(sig, k: int) -> bytes:
    return hashlib.blake2b(int(sig).to_bytes(k, "big"), digest_size=DIGEST).digest()


def rsa_sign_own(key: tuple, ids: list[str]) -> bytes:
    """Leader: H2(FDH(id)^d) for its own ids, with CRT."""
    crt = _crt(key)
    n = crt[0]
    k = _nbytes(n)
    return b"".join(_final(_sign(crt, _fdh(n, k, i)), k) for i in ids)


def rsa_sign_blinded(key: tuple, blinded: bytes) -> bytes:
    """Leader: b^d for each blinded value from the follower, with CRT."""
    crt = _crt(key)
    n = crt[0]
    k = _nbytes(n)
    if len(blinded) % k:
        raise CryptoError(f"RSA batch length is not a multiple of {k} bytes")
    out = []
    for off in range(0, len(blinded), k):
        b = gmpy2.mpz(int.from_bytes(blinded[off : off + k], "big"))
        if b <= 1 or b >= n:
            raise CryptoError("peer sent a blinded value out of range")
        out.append(int(_sign(crt, b)).to_bytes(k, "big"))
    return b"".join(out)


def rsa_blind(pub: tuple[int, int], ids: list[str]) -> tuple[bytes, bytes]:
    """Follower: (FDH(id) * r^e mod n for each id, r^-1 mod n for each id)."""
    n, e = gmpy2.mpz(pub[0]), gmpy2.mpz(pub[1])
    k = _nbytes(n)
    blinded, unblind = [], []
    for ident in ids:
        while True:
            r = gmpy2.mpz(int.from_bytes(secrets.token_bytes(k + 16), "big")) % n
            if r > 1 and gmpy2.gcd(r, n) == 1:
                break
        blinded.append(int((_fdh(n, k, ident) * gmpy2.powmod(r, e, n)) % n).to_bytes(k, "big"))
        unblind.append(int(gmpy2.invert(r, n)).to_bytes(k, "big"))
    return b"".join(blinded), b"".join(unblind)


def rsa_unblind(pub: tuple[int, int], sigs: bytes, unblind: bytes) -> bytes:
    """Follower: H2(s * r^-1 mod n) = H2(FDH(id)^d) for each signed value; checks the signature."""
    n = gmpy2.mpz(pub[0])
    k = _nbytes(n)
    if len(sigs) != len(unblind):
        raise CryptoError("peer returned a different number of signatures than were sent")
    out = []
    for off in range(0, len(sigs), k):
        s = gmpy2.mpz(int.from_bytes(sigs[off : off + k], "big"))
        if s >= n:
            raise CryptoError("peer sent a signature out of range")
        out.append(_final((s * gmpy2.mpz(int.from_bytes(unblind[off : off + k], "big"))) % n, k))
    return b"".join(out)


def rsa_verify_sample(pub: tuple[int, int], blinded: bytes, sigs: bytes, count: int = 4) -> bool:
    """Check s^e == b for a few signatures: a leader signing with a wrong key is caught early."""
    n, e = gmpy2.mpz(pub[0]), gmpy2.mpz(pub[1])
    k = _nbytes(n)
    total = len(sigs) // k
    for j in range(min(count, total)):
        off = j * k
        s = gmpy2.mpz(int.from_bytes(sigs[off : off + k], "big"))
        b = gmpy2.mpz(int.from_bytes(blinded[off : off + k], "big"))
        if gmpy2.powmod(s, e, n) != b:
            return False
    return True


def fedlearner_sign_own(key: tuple, ids: list[str]) -> bytes:
    """The benchmark's baseline: Fedlearner's full-exponent powmod, no CRT (same FDH/digest)."""
    n, e, ps, ds = key
    phi = functools.reduce(lambda a, b: a * b, (p - 1 for p in ps))
    d = gmpy2.invert(gmpy2.mpz(e), gmpy2.mpz(phi))
    nm = gmpy2.mpz(n)
    k = _nbytes(n)
    return b"".join(_final(gmpy2.powmod(_fdh(nm, k, i), d, nm), k) for i in ids)
