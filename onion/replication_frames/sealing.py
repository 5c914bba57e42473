"""Sealing and opening replication frames: the box, the signature, the time, the kind.

Design note
-----------
The box key is the static-static X25519 of the two nodes' onion keys (BLAKE2b-KDF,
context: the two node IDs in byte order); the identity key signs the exact body bytes;
a reply names its request's body digest. Messages travel as small maps (``_message_wire``);
a batch is bounded by count and by :func:`batch_cost`. See the package note.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Final

from veil.onion import crypto
from veil.onion.cbor import decode, encode
from veil.onion.errors import (
    BadSignature,
    ClockSkew,
    DecodeError,
    IntegrityError,
    ProtocolError,
    SchemaError,
    Unauthorized,
)
from veil.onion.keys import NodeKeys
from veil.onion.replica import ReplicaMessage

from .format import (
    _AD_PREFIX,
    _BODIES,
    _FRAME,
    _INNER,
    _KDF_PURPOSE,
    BATCH_MAX_BYTES,
    DOMAIN,
    FORMAT_VERSION,
    ITEM_OVERHEAD,
    MAX_FRAME,
    MAX_MESSAGES,
    SIZE_CLASSES,
)
from .padding import _pad, _unpad

__all__ = ["PeerLookup", "batch_cost"]

PeerLookup = Callable[[bytes], Any]
"""Maps a node ID to its consensus entry (with ``onion_key``), or None if not listed."""


def batch_cost(message: ReplicaMessage) -> int:
    """What one message counts against :data:`BATCH_MAX_BYTES` (its proof included)."""
    proof = message.proof
    return len(message.data) + ITEM_OVERHEAD + (0 if proof is None else len(proof))


#: Box keys derived so far, by (our identity, our onion key, peer's ID, peer's onion
#: key): see :func:`_box_key`. Only listed nodes reach it (a frame's sender is looked up
#: in the consensus before its key is derived), and it is capped anyway.
_BOX_KEYS: dict[tuple[bytes, bytes, bytes, bytes], bytes] = {}
#: At most this many box keys are kept (a consensus lists far fewer nodes); when full,
#: the oldest is dropped.
_BOX_KEYS_MAX: Final = 4096


def _box_key(keys: NodeKeys, peer: Any) -> bytes:
    """The static-static box key of ``keys`` and ``peer``, derived once per pair.

    It is a pure function of the two nodes' long-term keys, and deriving it (an X25519
    scalar multiplication and a BLAKE2b KDF) was about a quarter of the CPU of a push
    and its ack (measured with this module: 4 derivations of ~130 us in a push's
    ~1.6 ms of sealing and opening on both sides), so it is kept, as NaCl's
    ``crypto_box_beforenm`` intends. The cache is keyed by both onion keys, so a peer
    whose consensus entry brings a new onion key gets a new box key; it holds nothing
    that the node's own secrets do not already give.
    """
    cache_key = (keys.identity_public, keys.onion_public, peer.node_id, peer.onion_key)
    key = _BOX_KEYS.get(cache_key)
    if key is None:
        shared = crypto.x25519(keys.onion_secret, peer.onion_key)
        a, b = sorted((keys.identity_public, peer.node_id))
        key = crypto.kdf(shared, _KDF_PURPOSE, context=a + b)
        if len(_BOX_KEYS) >= _BOX_KEYS_MAX:
            del _BOX_KEYS[next(iter(_BOX_KEYS))]
        _BOX_KEYS[cache_key] = key
    return key


def _ad(sender: bytes, receiver: bytes) -> bytes:
    return _AD_PREFIX + bytes([FORMAT_VERSION]) + sender + receiver


def _seal(
    keys: NodeKeys, peer: Any, kind: str, fields: dict[str, Any], now_ms: int
) -> tuple[bytes, bytes]:
    """Frame ``fields`` as a body of ``kind`` to ``peer``; return (frame, body digest)."""
    body_obj = {"kind": kind, "from": keys.identity_public, "to": peer.node_id, "t": now_ms}
    body_obj.update(fields)
    _BODIES[kind].check(body_obj)  # never send what a peer would refuse
    body = encode(body_obj)
    inner = _pad(encode({"body": body, "sig": keys.sign(DOMAIN, body)}))
    nonce = os.urandom(crypto.XNONCE_BYTES)
    sender, receiver = keys.identity_public, peer.node_id
    box = crypto.aead_seal(_box_key(keys, peer), nonce, inner, _ad(sender, receiver))
    frame = encode(
        {"v": FORMAT_VERSION, "from": sender, "to": receiver, "nonce": nonce, "box": box}
    )
    assert len(frame) in SIZE_CLASSES, len(frame)
    return frame, _digest(body)


def _digest(body: bytes) -> bytes:
    return crypto.hash32(body, b"veil/repl-body")


def _open(
    frame: bytes,
    keys: NodeKeys,
    lookup: PeerLookup,
    kind: str,
    *,
    now_ms: int,
    skew_ms: int,
) -> tuple[Any, dict[str, Any], bytes]:
    """Open a frame of ``kind`` for us: (sender's entry, body fields, body digest)."""
    outer = _FRAME.decode(frame, max_size=MAX_FRAME, max_depth=1)
    if len(frame) not in SIZE_CLASSES:
        raise DecodeError(f"a frame of {len(frame)} bytes is not one of {SIZE_CLASSES}")
    sender_id: bytes = outer["from"]
    if outer["to"] != keys.identity_public:
        raise Unauthorized("this frame is addressed to another node")
    sender = lookup(sender_id)
    if sender is None:
        raise Unauthorized(f"node {sender_id.hex()[:16]}... is not in this node's consensus")
    try:
        inner_bytes = crypto.aead_open(
            _box_key(keys, sender), outer["nonce"], outer["box"], _ad(sender_id, outer["to"])
        )
    except IntegrityError:
        raise Unauthorized("the frame does not open: altered, or not from that node") from None
    inner = _INNER.decode(_unpad(inner_bytes), max_size=MAX_FRAME, max_depth=1)
    body_bytes: bytes = inner["body"]
    try:
        crypto.verify(sender_id, DOMAIN, body_bytes, inner["sig"])
    except BadSignature:
        raise Unauthorized("the frame's signature does not verify") from None
    body = decode(body_bytes, max_size=MAX_FRAME, max_depth=3, canonical=True)
    if not isinstance(body, dict) or body.get("kind") != kind:
        got = body.get("kind") if isinstance(body, dict) else None
        raise SchemaError(f"expected a {kind} frame, got {got!r}")
    _BODIES[kind].check(body)
    if body["from"] != sender_id or body["to"] != keys.identity_public:
        raise Unauthorized("the signed body names other nodes than its frame")
    if abs(body["t"] - now_ms) > skew_ms:
        raise ClockSkew(f"frame time {body['t']} is more than {skew_ms} ms from ours ({now_ms})")
    return sender, body, _digest(body_bytes)


def _open_reply(
    frame: bytes, keys: NodeKeys, peer: Any, kind: str, digest: bytes, now_ms: int, skew_ms: int
) -> dict[str, Any]:
    def only(node_id: bytes) -> Any:
        return peer if node_id == peer.node_id else None

    _, body, _ = _open(frame, keys, only, kind, now_ms=now_ms, skew_ms=skew_ms)
    if not crypto.ct_equal(body["re"], digest):
        raise Unauthorized(f"this {kind} answers another request")
    return body


def _message_wire(m: ReplicaMessage) -> dict[str, Any]:
    wire = {
        "a": m.account,
        "ns": m.namespace,
        "h": m.hash,
        "d": m.data,
        "ts": m.timestamp_ms,
        "exp": m.expiry_ms,
    }
    if m.proof is not None:
        wire["p"] = m.proof
    return wire


def _messages(raw: list[dict[str, Any]]) -> list[ReplicaMessage]:
    out = [
        ReplicaMessage(m["a"], m["ns"], m["h"], m["d"], m["ts"], m["exp"], m.get("p")) for m in raw
    ]
    if len(out) > 1 and sum(batch_cost(m) for m in out) > BATCH_MAX_BYTES:
        raise ProtocolError(f"a batch of {len(out)} messages is over {BATCH_MAX_BYTES} bytes")
    return out


def _check_batch(messages: Sequence[ReplicaMessage]) -> None:
    if len(messages) > MAX_MESSAGES:
        raise ValueError(f"{len(messages)} messages is over the batch limit of {MAX_MESSAGES}")
    if len(messages) > 1 and sum(batch_cost(m) for m in messages) > BATCH_MAX_BYTES:
        raise ValueError(f"the batch is over {BATCH_MAX_BYTES} bytes")
