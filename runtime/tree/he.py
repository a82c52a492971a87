"""Homomorphic encryption through SecretFlow's HEU (Okamoto-Uchiyama or Paillier), vectorised.

The leader holds the key pair: it encrypts one packed (gradient, hessian) plaintext
per row and decrypts the follower's histogram sums. The follower holds only the
public key: it adds ciphertexts per node and bin (HEU's feature-wise bucket sums,
which run on all cores) and can decrypt nothing.

Before sending a node's sums the follower packs several into one ciphertext
(Horner's rule under encryption: ``acc = acc * 2**SLOT_BITS + next``), as many as
the key's plaintext space holds; the leader decrypts each packed ciphertext once
and splits it into its slots. Every slot is a signed (hessian, gradient) sum below
2**(SLOT_BITS - 1) in magnitude, so slots never carry into each other.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from runtime.errors import PeerError
from runtime.tree.core import PACK_BITS, SUM_BITS, pack, unpack

# A packed sum is below 2**(PACK_BITS + SUM_BITS); anything larger did not come from our ciphertexts.
RANGE_BITS = PACK_BITS + SUM_BITS + 2
# One slot of a packed ciphertext: a (hessian, gradient) sum, signed, below 2**(SLOT_BITS - 1) in magnitude.
SLOT_BITS = RANGE_BITS


class HeadroomError(PeerError):
    """More slots per ciphertext than the key's plaintext space holds."""


def plaintext_bits(kit: Any) -> int:
    """Bits of the largest plaintext magnitude the key holds (HEU's plaintext bound)."""
    return int(str(kit.public_key().plaintext_bound())).bit_length()


def max_slots(kit: Any) -> int:
    """How many SLOT_BITS-bit slots fit in one plaintext, one bit kept for the sign."""
    return max(1, (plaintext_bits(kit) - 1) // SLOT_BITS)


def check_slots(slots: int, kit: Any, what: str) -> None:
    if slots < 1:
        raise HeadroomError(f"{what}: {slots} sums per ciphertext is not a packing")
    need, have = slots * SLOT_BITS + 1, plaintext_bits(kit)
    if need > have:
        raise HeadroomError(
            f"{what}: packing {slots} sums of {SLOT_BITS} bits per ciphertext needs {need} bits of plaintext, "
            f"the key's plaintext space holds {have} (at most {max_slots(kit)} sums); refused, as they would overflow"
        )


# An encryption costs about this many decryptions (HEU OU 2048: 10.3k vs 4.0k/s unloaded, 4.9k vs 1.5k/s loaded).
ENCRYPT_PER_DECRYPT = 0.4


def shifted_copies(rows: int, features: int, nbins: int, max_depth: int, limit: int) -> int:
    """How many shifted encryptions of the gradients (1 = just the plain one) make a tree cheapest.

    k copies cost (k - 1) extra encryptions per row and divide the decryptions of the
    follower's histograms (features x bins sums for about 2**(max_depth - 1) nodes) by k;
    k must divide the features, and a `limit` of 1 turns shifting off.
    """
    sums = features * nbins * 2 ** max(max_depth - 1, 0)
    best, best_cost = 1, float(sums)
    for k in range(2, max(limit, 1) + 1):
        cost = (k - 1) * rows * ENCRYPT_PER_DECRYPT + sums / k
        if features % k == 0 and cost < best_cost:
            best, best_cost = k, cost
    return best


def slots_for(count: int, limit: int) -> int:
    """The most slots (<= limit) that divide `count` sums into equal packed ciphertexts."""
    return next(k for k in range(max(1, min(limit, count)), 0, -1) if count % k == 0) if count else 1


def unpack_slots(packed: np.ndarray, slots: int) -> np.ndarray:
    """Packed plaintexts (Python ints) back to the `slots` sums each held, in the order they were packed."""
    half = 1 << (SLOT_BITS - 1)
    mask = (1 << SLOT_BITS) - 1
    x = packed.ravel()
    parts = []
    for _ in range(slots):
        v = ((x + half) & mask) - half
        parts.append(v)
        x = (x - v) >> SLOT_BITS
    if slots > 1 and np.any(x != 0):
        raise PeerError("the follower's packed histogram sums overflow their slots (tampered ciphertexts)")
    return np.concatenate(parts[::-1])


def use_threads(threads: int) -> None:
    """HEU's parallel loops read YACL_NUM_THREADS when first loaded: all cores unless told otherwise."""
    os.environ.setdefault("YACL_NUM_THREADS", str(threads or os.cpu_count() or 1))


def _heu() -> tuple[Any, Any]:
    from heu import numpy as hnp
    from heu import phe

    return phe, hnp


def fingerprint(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()


class KeyPair:
    """The leader's side: key generation, encryption of packed gradients, decryption of sums."""

    def __init__(self, scheme: str, key_bits: int) -> None:
        phe, hnp = _heu()
        kind = phe.SchemaType.OU if scheme == "ou" else phe.SchemaType.ZPaillier
        self.kit = hnp.setup(kind, key_bits)
        self.public_key = self.kit.public_key().serialize()
        self.fingerprint = fingerprint(self.public_key)
        self._enc = self.kit.encryptor()
        self._dec = self.kit.decryptor()
        self.max_slots = max_slots(self.kit)

    def encrypt(self, gq: np.ndarray, hq: np.ndarray, shift: int = 0) -> bytes:
        """Serialized ciphertexts of (hq << PACK_BITS + gq) << (SLOT_BITS * shift), one per row."""
        if shift:
            check_slots(shift + 1, self.kit, "encrypting shifted gradients")
        packed = (pack(gq, hq) << (SLOT_BITS * shift)).reshape(-1, 1)
        ct = self._enc.encrypt(self.kit.array(packed))
        return ct.serialize()

    def decrypt_sums(self, blob: bytes, count: int, slots: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(G, H) of `count` sums from serialized ciphertexts, `slots` sums packed in each.

        A wrong key, tampered data or more slots than the key holds is a PeerError.
        """
        check_slots(slots, self.kit, "the follower's histogram")
        if count % slots:
            raise PeerError(f"the follower's histogram: {count} sums do not pack {slots} to a ciphertext")
        ct = load_ciphertexts(blob, count // slots, "the follower's histogram")
        try:
            plain = self._dec.decrypt_in_range(ct, slots * SLOT_BITS)
        except Exception as exc:  # noqa: BLE001 - HEU raises its own runtime errors
            raise PeerError(
                "the follower's histogram sums do not decrypt under this leader's key "
                f"(wrong key or tampered ciphertexts): {exc.__class__.__name__}"
            ) from None
        return unpack(unpack_slots(plain.to_numpy(), slots))


def load_ciphertexts(blob: bytes, count: int, what: str) -> Any:
    _, hnp = _heu()
    try:
        ct = hnp.CiphertextArray.load_from(blob)
    except Exception as exc:  # noqa: BLE001 - a malformed buffer
        raise PeerError(f"{what}: the ciphertexts are malformed ({exc.__class__.__name__})") from None
    if ct.size != count or (count and ct.cols != 1):
        raise PeerError(
            f"{what}: {ct.size} ciphertexts where the message announces {count} (tampered or truncated message)"
        )
    return ct


class PublicKey:
    """The follower's side: HEU bound to the leader's public key (adds only)."""

    def __init__(self, public_key: bytes) -> None:
        phe, hnp = _heu()
        try:
            pk = phe.PublicKey.load_from(public_key)
        except Exception as exc:  # noqa: BLE001
            raise PeerError(f"the leader's public key is malformed ({exc.__class__.__name__})") from None
        self.kit = hnp.setup(pk)
        self.fingerprint = fingerprint(public_key)
        self._ev = self.kit.evaluator()
        self.max_slots = max_slots(self.kit)

    def bucket_sums(
        self, ct: Any, masks: list[np.ndarray], bins: np.ndarray, nbins: int, slots: int = 1
    ) -> list[bytes]:
        """Per mask (node): cumulative per-feature, per-bin sums of the masked rows' ciphertexts, packed, serialized."""
        if not masks:
            return []
        sums = self._ev.batch_feature_wise_bucket_sum(ct, masks, bins, nbins, True)
        return [self.pack(s, slots).serialize() for s in sums]

    def bucket_sums_shifted(self, cts: list[Any], masks: list[np.ndarray], bins: np.ndarray, nbins: int) -> list[bytes]:
        """Like bucket_sums packed len(cts) to a ciphertext, from the leader's shifted encryptions (no shift here).

        `cts[j]` holds the rows' plaintexts times 2**(SLOT_BITS * j). The features split into
        len(cts) equal groups; group i is summed from cts[k - 1 - i] (the first group in the top
        slot, as `pack` lays them out), and the groups' sums are added.
        """
        k = len(cts)
        check_slots(k, self.kit, "packing the histogram")
        f = bins.shape[1]
        if f % k:
            raise PeerError(f"protocol error: {f} features do not split into {k} shifted groups")
        if not masks:
            return []
        g = f // k
        acc: list[Any] = []
        for i in range(k):
            part = np.ascontiguousarray(bins[:, i * g : (i + 1) * g])
            sums = self._ev.batch_feature_wise_bucket_sum(cts[k - 1 - i], masks, part, nbins, True)
            acc = list(sums) if i == 0 else [self._ev.add(a, b) for a, b in zip(acc, sums, strict=True)]
        return [a.serialize() for a in acc]

    def pack(self, sums: Any, slots: int) -> Any:
        """`slots` sums per ciphertext: the first m sums in the top slot, the next m below, and so on."""
        check_slots(slots, self.kit, "packing the histogram")
        if slots == 1:
            return sums
        count = sums.size
        if count % slots:
            raise ValueError(f"{count} sums do not pack {slots} to a ciphertext")
        m = count // slots
        shift = self.kit.array(np.full((m, 1), 1 << SLOT_BITS, dtype=object))
        acc = sums[0:m]
        for j in range(1, slots):
            acc = self._ev.add(self._ev.mul(acc, shift), sums[j * m : (j + 1) * m])
        return acc


def random_key_ciphertexts(scheme: str, key_bits: int, count: int) -> tuple[Any, bytes]:
    """Ciphertexts under a fresh, unrelated key (the runtime tests' wrong-key fault)."""
    kp = KeyPair(scheme, key_bits)
    _, hnp = _heu()
    ct = kp._enc.encrypt(kp.kit.array(np.ones((count, 1), dtype=np.int64)))
    return ct, kp.fingerprint
