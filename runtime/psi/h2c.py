"""Hashing identifiers to Curve25519 points (RFC 9380, Elligator 2).

ECDH-PSI needs a hash ``H`` from identifiers onto the curve's group that behaves
as a random oracle: its security proof programs ``H(x) = g^r`` for random ``r``.
We use the RFC 9380 suite ``curve25519_XMD:SHA-512_ELL2_RO_`` (``hash_to_curve``:
two field elements from ``expand_message_xmd`` with SHA-512, each mapped with
Elligator 2, the points added), which is indifferentiable from a random oracle
and is the suite RFC 9497 (OPRF) uses for curve25519. The single-map
``encode_to_curve`` (``_NU_``) is available too but is not the default: its
output covers only part of the curve, so it is not a random oracle.

Only the u-coordinate is returned, because X25519 (RFC 7748) works on
u-coordinates. The cofactor is not cleared here: X25519 clamps every scalar to a
multiple of 8, so ``X25519(k, u(P)) = u([k/8]·[8]P)`` is the scalar product of
``clear_cofactor(P)`` exactly as the RFC defines the hash. Tests check this file
against the RFC's test vectors (Appendix J.4.1).

Arithmetic is gmpy2 (GMP); Legendre symbols decide the Elligator branch, so the
``_NU_`` map needs no square root at all and the ``_RO_`` map needs two.
"""

from __future__ import annotations

import hashlib

import gmpy2

P = gmpy2.mpz(2**255 - 19)
J = gmpy2.mpz(486662)  # Montgomery A; K = 1
Z = gmpy2.mpz(2)  # Elligator 2 non-square for curve25519 (RFC 9380 §8.5)
SQRT_M1 = gmpy2.powmod(2, (P - 1) // 4, P)
_SQRT_EXP = (P + 3) // 8
_L = 48  # bytes per field element (RFC 9380: ceil((ceil(log2 p) + 128) / 8))

SUITE_RO = "curve25519_XMD:SHA-512_ELL2_RO_"
SUITE_NU = "curve25519_XMD:SHA-512_ELL2_NU_"
SUITES = (SUITE_RO, SUITE_NU)


def dst_for(suite: str, tag: str = "FEDSITE-PSI-V01-CS02") -> bytes:
    """Domain separation tag: application tag plus suite (RFC 9380 §3.1)."""
    return f"{tag}-with-{suite}".encode()


class Expander:
    """expand_message_xmd with SHA-512 (RFC 9380 §5.3.1) for one DST, with the zero pad pre-hashed."""

    def __init__(self, dst: bytes) -> None:
        if len(dst) > 255:
            raise ValueError("DST longer than 255 bytes")
        self.dst_prime = dst + bytes([len(dst)])
        self._zpad = hashlib.sha512(b"\x00" * 128)

    def expand(self, msg: bytes, length: int) -> bytes:
        ell = -(-length // 64)
        h = self._zpad.copy()
        h.update(msg + length.to_bytes(2, "big") + b"\x00" + self.dst_prime)
        b0 = h.digest()
        bi = hashlib.sha512(b0 + b"\x01" + self.dst_prime).digest()
        out = [bi]
        for i in range(2, ell + 1):
            x = (int.from_bytes(b0, "big") ^ int.from_bytes(bi, "big")).to_bytes(64, "big")
            bi = hashlib.sha512(x + bytes([i]) + self.dst_prime).digest()
            out.append(bi)
        return b"".join(out)[:length]


def _g(x):
    return (x * (x * (x + J) + 1)) % P


def _map_u(u) -> tuple:
    """Elligator 2 (RFC 9380 §6.7.1): return (x, gx, x_is_first_branch)."""
    t = (1 + Z * u * u) % P
    x1 = (-J * gmpy2.invert(t, P)) % P if t else P - J
    if x1 == 0:  # unreachable for curve25519 but part of the RFC's map
        x1 = P - J
    gx1 = _g(x1)
    if gmpy2.legendre(gx1, P) >= 0:
        return x1, gx1, True
    x2 = (-x1 - J) % P
    return x2, _g(x2), False


def _sqrt(a):
    c = gmpy2.powmod(a, _SQRT_EXP, P)
    if (c * c - a) % P:
        c = (c * SQRT_M1) % P
    return c


def _map_point(u) -> tuple:
    x, gx, first = _map_u(u)
    y = _sqrt(gx)
    # RFC 9380 §6.7.1 steps 6-7: sgn0(y) == 1 on the first branch, 0 on the second.
    if (int(y) & 1) != (1 if first else 0):
        y = P - y if y else y
    return x, y


def _field_elements(exp: Expander, msg: bytes, count: int) -> list:
    uniform = exp.expand(msg, count * _L)
    return [gmpy2.mpz(int.from_bytes(uniform[i * _L : (i + 1) * _L], "big")) % P for i in range(count)]


def hash_to_u_ro(exp: Expander, msg: bytes):
    """u-coordinate of Q0 + Q1 (hash_to_curve before clear_cofactor) as an mpz."""
    u0, u1 = _field_elements(exp, msg, 2)
    x0, y0 = _map_point(u0)
    x1, y1 = _map_point(u1)
    if x0 == x1:
        if y0 != y1 or y0 == 0:
            return gmpy2.mpz(0)  # the identity: probability ~2^-250
        lam = ((3 * x0 * x0 + 2 * J * x0 + 1) * gmpy2.invert(2 * y0, P)) % P
    else:
        lam = ((y1 - y0) * gmpy2.invert((x1 - x0) % P, P)) % P
    return (lam * lam - J - x0 - x1) % P


def hash_to_u_nu(exp: Expander, msg: bytes):
    """u-coordinate of encode_to_curve's point before clear_cofactor (no square root needed)."""
    (u,) = _field_elements(exp, msg, 1)
    return _map_u(u)[0]


def u_to_bytes(u) -> bytes:
    """RFC 7748 encoding: 32 bytes little-endian."""
    return int(u).to_bytes(32, "little")


def x_double(x):
    """u-coordinate of [2]P from u(P) (used by tests to apply clear_cofactor = [8])."""
    x = gmpy2.mpz(x)
    num = (x * x - 1) ** 2
    den = 4 * x * (x * x + J * x + 1)
    return (num * gmpy2.invert(den % P, P)) % P


class HashToCurve:
    """Callable id bytes -> 32-byte u-coordinate for one suite and DST."""

    def __init__(self, suite: str = SUITE_RO, dst: bytes | None = None) -> None:
        if suite not in SUITES:
            raise ValueError(f"unknown hash-to-curve suite {suite!r}")
        self.suite = suite
        self._exp = Expander(dst if dst is not None else dst_for(suite))
        self._fn = hash_to_u_ro if suite == SUITE_RO else hash_to_u_nu

    def __call__(self, msg: bytes) -> bytes:
        return u_to_bytes(self._fn(self._exp, msg))
