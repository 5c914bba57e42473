"""A room's proof of work: a nonce whose hash over a post starts with enough zero bits.

Design note
-----------
A room may ask ``d`` bits of work per post (its metadata's ``pow``, 0 to
:data:`MAX_POW_BITS`): the post's ``pw`` is an 8-byte nonce such that
``BLAKE2b-256(person="veil/room-pow", E || pw)`` starts with at least ``d`` zero bits
(big-endian bit order), ``E`` being the canonical encoding of the post map without
``pw`` and ``sig`` (:attr:`~veil.onion.room.records.RoomPost.work_bytes`). So the work
covers the room, the author, the post's nonce, time and text, and a delegated key's
chain: it cannot be reused for another post, and the author's signature covers ``pw``.
Checking costs one hash; solving about ``2**d``. Spam without identities (accounts are
free): a per-author rate alone is no bound, work per post is.
"""

from __future__ import annotations

import hashlib
from typing import Final

from ..errors import InsufficientWork, InvalidValue

__all__ = [
    "MAX_POW_BITS",
    "POW_NONCE_BYTES",
    "check_bits",
    "check_pow",
    "leading_zero_bits",
    "solve_work",
]

#: The most work a room may ask (2^24 hashes is seconds of an honest poster's CPU).
MAX_POW_BITS: Final = 24
POW_NONCE_BYTES: Final = 8
_POW_PURPOSE: Final = b"veil/room-pow"


def leading_zero_bits(digest: bytes) -> int:
    """The number of leading zero bits of ``digest`` (big-endian bit order)."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def check_bits(bits: int) -> int:
    """``bits`` if it is a difficulty a room may ask; :class:`InvalidValue` if not."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= MAX_POW_BITS:
        raise InvalidValue(f"proof-of-work difficulty is 0 to {MAX_POW_BITS} bits")
    return bits


def _work_prefix(work_bytes: bytes) -> hashlib.blake2b:
    return hashlib.blake2b(work_bytes, digest_size=32, person=_POW_PURPOSE)


def solve_work(work_bytes: bytes, bits: int) -> bytes:
    """An 8-byte nonce whose work over ``work_bytes`` reaches ``bits`` leading zero bits.
    About ``2**bits`` BLAKE2b calls (the prefix is hashed once and copied)."""
    check_bits(bits)
    prefix = _work_prefix(work_bytes)
    limit = 1 << (256 - bits)
    counter = 0
    while True:
        nonce = counter.to_bytes(POW_NONCE_BYTES, "big")
        h = prefix.copy()
        h.update(nonce)
        if int.from_bytes(h.digest(), "big") < limit:
            return nonce
        counter += 1


def check_pow(work_bytes: bytes, pow_nonce: bytes | None, bits: int) -> None:
    """Raise :class:`~veil.onion.errors.InsufficientWork` unless ``pow_nonce`` over
    ``work_bytes`` (a :attr:`~veil.onion.room.records.RoomPost.work_bytes`) reaches
    ``bits``."""
    check_bits(bits)
    if bits == 0:
        return
    if pow_nonce is None:
        raise InsufficientWork(f"the room asks {bits} bits of work; the post has none")
    h = _work_prefix(work_bytes)
    h.update(pow_nonce)
    if leading_zero_bits(h.digest()) < bits:
        raise InsufficientWork(f"the post's work does not reach the room's {bits} bits")
