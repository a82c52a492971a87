"""Homomorphic encryption through SecretFlow's HEU (Okamoto-Uchiyama or Paillier), vectorised.

The leader holds the key pair: it encrypts one packed (gradient, hessian) plaintext
per row and decrypts the follower's histogram sums. The follower holds only the
public key: it adds ciphertexts per node and bin (HEU's feature-wise bucket sums,
which run on all cores) and can decrypt nothing.
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

    def encrypt(self, gq: np.ndarray, hq: np.ndarray) -> bytes:
        """Serialized ciphertexts of hq << PACK_BITS + gq, one per row."""
        _, hnp = _heu()
        packed = pack(gq, hq).reshape(-1, 1)
        ct = self._enc.encrypt(self.kit.array(packed))
        return ct.serialize()

    def decrypt_sums(self, blob: bytes, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(G, H) from serialized ciphertext sums; a wrong key or tampered data is a PeerError."""
        _, hnp = _heu()
        ct = load_ciphertexts(blob, count, "the follower's histogram")
        try:
            plain = self._dec.decrypt_in_range(ct, RANGE_BITS)
        except Exception as exc:  # noqa: BLE001 - HEU raises its own runtime errors
            raise PeerError(
                "the follower's histogram sums do not decrypt under this leader's key "
                f"(wrong key or tampered ciphertexts): {exc.__class__.__name__}"
            ) from None
        return unpack(plain.to_numpy())


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

    def bucket_sums(self, ct: Any, masks: list[np.ndarray], bins: np.ndarray, nbins: int) -> list[bytes]:
        """Per mask (node): cumulative per-feature, per-bin sums of the masked rows' ciphertexts, serialized."""
        if not masks:
            return []
        sums = self._ev.batch_feature_wise_bucket_sum(ct, masks, bins, nbins, True)
        return [s.serialize() for s in sums]


def random_key_ciphertexts(scheme: str, key_bits: int, count: int) -> tuple[Any, bytes]:
    """Ciphertexts under a fresh, unrelated key (the runtime tests' wrong-key fault)."""
    kp = KeyPair(scheme, key_bits)
    _, hnp = _heu()
    ct = kp._enc.encrypt(kp.kit.array(np.ones((count, 1), dtype=np.int64)))
    return ct, kp.fingerprint
