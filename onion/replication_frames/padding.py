"""Padding of the replication frames: every frame exactly one of the size classes long.

Design note
-----------
The padded plaintext is the inner CBOR's length (u32), the bytes, then zeros, to the
smallest class that holds it; :func:`_unpad` takes only exactly that (one content, one
encoding). Why these classes: the package note.
"""

from __future__ import annotations

from typing import Final

from veil.onion import crypto, rpc
from veil.onion.cbor import encode
from veil.onion.errors import DecodeError

from .format import (
    _LENGTH,
    BATCH_MAX_BYTES,
    FORMAT_VERSION,
    ITEM_OVERHEAD,
    MAX_SUMMARY,
    SIZE_CLASSES,
)

__all__: list[str] = []


def _frame_overhead(box_len: int) -> int:
    """The bytes of a frame around a box of ``box_len`` bytes (its fields are all of
    fixed size, so this depends on ``box_len`` only through the CBOR length header)."""
    dummy = {
        "v": FORMAT_VERSION,
        "from": bytes(32),
        "to": bytes(32),
        "nonce": bytes(crypto.XNONCE_BYTES),
        "box": bytes(box_len),
    }
    return len(encode(dummy)) - box_len


def _plaintext_sizes() -> tuple[int, ...]:
    """For each size class, the padded plaintext that makes the frame exactly that long."""
    sizes = []
    for size in SIZE_CLASSES:
        box_len = size - _frame_overhead(size)
        # The header of box_len is the header of a size-class-long box (no boundary of
        # CBOR's length encoding lies between them): the frame is exactly ``size``.
        assert box_len + _frame_overhead(box_len) == size
        sizes.append(box_len - crypto.AEAD_TAG_BYTES)
    return tuple(sizes)


#: The padded plaintext of each class (index for index with SIZE_CLASSES).
_PLAINTEXT_SIZES: Final = _plaintext_sizes()
#: Upper bound of a push's bytes besides its messages' ``batch_cost``: the body's other
#: fields (about 160 bytes), the signature and its map (about 80), the length field.
_FIXED_OVERHEAD: Final = 1024
# A full batch, a lone message of the largest body, a forwarded request and its reply
# all fit the largest class, so the wire limits never refuse what the batch limits let
# through.
assert _PLAINTEXT_SIZES[-1] - _LENGTH.size >= BATCH_MAX_BYTES + _FIXED_OVERHEAD
assert rpc.MAX_BODY + ITEM_OVERHEAD + rpc.MAX_PROOF_BYTES <= BATCH_MAX_BYTES
assert _PLAINTEXT_SIZES[-1] - _LENGTH.size >= rpc.MAX_REQUEST_SIZE + _FIXED_OVERHEAD
assert _PLAINTEXT_SIZES[-1] - _LENGTH.size >= rpc.MAX_REPLY_SIZE + _FIXED_OVERHEAD
#: Upper bound of one summary entry's CBOR: its map and keys (~16), ``s`` and ``exp``
#: (9 each), ``a`` (35), ``ns`` (5), ``h`` (34).
_SUMMARY_ENTRY_BYTES: Final = 120
assert _PLAINTEXT_SIZES[-1] - _LENGTH.size >= MAX_SUMMARY * _SUMMARY_ENTRY_BYTES + _FIXED_OVERHEAD


def _pad(inner: bytes) -> bytes:
    """``inner`` as the plaintext of the smallest class that holds it: its length
    (u32), the bytes, then zeros. :class:`ValueError` if no class holds it."""
    need = _LENGTH.size + len(inner)
    for size in _PLAINTEXT_SIZES:
        if need <= size:
            return _LENGTH.pack(len(inner)) + inner + bytes(size - need)
    raise ValueError(f"{len(inner)} bytes of frame content is over the largest size class")


def _unpad(padded: bytes) -> bytes:
    """The inner bytes of an opened plaintext; :class:`DecodeError` unless the padding
    is exactly what :func:`_pad` makes (a length that fits, zeros after it, the
    smallest class that holds it), so that one content has one encoding."""
    if len(padded) < _LENGTH.size:
        raise DecodeError("the padded frame content is shorter than its length field")
    (length,) = _LENGTH.unpack_from(padded)
    end = _LENGTH.size + length
    if end > len(padded):
        raise DecodeError(f"the length field ({length}) runs past the padded content")
    if any(padded[end:]):
        raise DecodeError("the frame's padding is not all zero bytes")
    smaller = [size for size in _PLAINTEXT_SIZES if size < len(padded)]
    if smaller and end <= smaller[-1]:
        raise DecodeError("the frame is padded to a larger size class than it needs")
    return padded[_LENGTH.size : end]
