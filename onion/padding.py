"""Length hiding: pad data so that lengths fall on the coarse Padmé grid.

Design note
-----------
An encrypted message leaks its length. veil pads the plaintexts of envelopes, channel
posts and group messages with Padmé (Nikitin, Barman, Lueks, Underwood, Hubaux and
Ford, "Reducing Metadata Leakage from Encrypted Files and Communication with PURBs",
PETS 2019, Algorithm 1): a length L whose highest set bit is bit E is rounded up so
that only its top floor(log2 E) + 1 bits may be non-zero. An observer then learns
O(log log L) bits of the length instead of O(log L), at an overhead of less than 12%
(the worst case is 129 -> 144 bytes, 11.6%; averaged over 64 KiB..128 KiB it is about
1%) -- against up to 100% for padding to the next power of two. Onion packet bodies do
not use this module: they have their own fixed size classes.

Short messages (most chat messages) all get the same length: the padded total is at
least ``min_size`` (256 bytes by default), itself a Padmé value.

The padding is self-delimiting, ISO/IEC 7816-4 style: one 0x80 byte after the data,
then zero bytes up to the padded length. :func:`unpad` takes the data back by finding
the last non-zero byte, which must be that 0x80. It is meant for plaintext that an AEAD
has already authenticated, so it need not be constant-time: the only party that sees
its timing already holds the plaintext.

``overhead`` lets a caller put the *total* it sends on the grid rather than the padded
block alone: an envelope adds a version byte, an ephemeral key and an AEAD tag around
its padded plaintext, and passes their size here, so the length a node stores is
exactly a Padmé value.
"""

from __future__ import annotations

from typing import Final

from .errors import DecodeError, InvalidValue

__all__ = ["MIN_PADDED_SIZE", "pad", "padded_length", "padme_length", "unpad"]

#: The smallest total a padded message takes (with its ``overhead``): a Padmé value.
MIN_PADDED_SIZE: Final = 256

_MARKER: Final = 0x80


def padme_length(n: int) -> int:
    """Padmé: the smallest length >= ``n`` whose low ``E - (floor(log2 E) + 1)`` bits are 0.

    ``E = floor(log2 n)``. Lengths 0 to 3 are already on the grid and are returned as is.
    """
    if n < 0:
        raise InvalidValue("a length is not negative")
    if n < 2:
        return n
    e = n.bit_length() - 1  # floor(log2 n)
    s = e.bit_length()  # floor(log2 e) + 1, for e >= 1
    mask = (1 << (e - s)) - 1
    return (n + mask) & ~mask


def padded_length(n: int, *, min_size: int = MIN_PADDED_SIZE, overhead: int = 0) -> int:
    """The length :func:`pad` gives to ``n`` bytes of data (without ``overhead``)."""
    if n < 0 or overhead < 0 or min_size < 0:
        raise InvalidValue("lengths are not negative")
    return padme_length(max(n + 1 + overhead, min_size)) - overhead


def pad(data: bytes, *, min_size: int = MIN_PADDED_SIZE, overhead: int = 0) -> bytes:
    """``data`` + 0x80 + zeros, so that ``len(result) + overhead`` is a Padmé length.

    The total ``len(result) + overhead`` is at least ``min_size``, rounded up to the grid.
    """
    target = padded_length(len(data), min_size=min_size, overhead=overhead)
    return bytes(data) + b"\x80" + bytes(target - len(data) - 1)


def unpad(padded: bytes) -> bytes:
    """The data :func:`pad` padded; :class:`DecodeError` if there is no 0x80 marker."""
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != _MARKER:
        raise DecodeError("padding has no 0x80 marker after the data")
    return stripped[:-1]
