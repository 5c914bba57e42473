"""The node-to-node replication protocol: sealed, signed frames (bytes in, objects out).

Design note
-----------
Swarm members copy messages to each other (node/replication/) over plain HTTP
(``POST /replicate``, ``/replicate/pull`` and ``/replicate/forward``). What travels is
every stored message with its account, so the link must hide it from a watcher and a
peer must know who it talks to; this module is that layer, with no I/O (it never
touches trio or SQLite): like onion/link.py, it lives in onion/ so that it can be tested
with bytes in and bytes out.

A *frame* is what goes over HTTP, request and reply alike::

    frame  = {"v": 4, "from": node ID (32), "to": node ID (32), "nonce": 24 bytes,
              "box": XChaCha20-Poly1305(key, nonce, padded, ad = "veil/replicate" v from to)}
    key    = BLAKE2b-KDF(X25519(own onion secret, peer's onion key), "veil/replicate",
                         context = the two node IDs in byte order)
    padded = len(inner) (u32, big-endian) | inner | zero bytes, so that the frame is
             exactly one of SIZE_CLASSES long (the smallest that holds it)
    inner  = {"body": canonical CBOR, "sig": Ed25519(identity key, domain b"replicate", body)}
    body  = {"kind": str, "from", "to", "t": ms, ...kind's fields}

Why both a box and a signature. The box (the static-static X25519 key of NaCl's
``crypto_box``, with a random 24-byte nonce) keeps message data and account IDs from
anyone on the link; the consensus binds each node's onion key to its identity. The
signature, by the identity key over the exact body bytes, is what the receiver checks
to accept data as the sender's (the box alone would also open for a holder of the
*receiver's* onion key). ``from`` and ``to`` are inside the signed body too, so a frame
cannot be redirected to another node, and ``t`` is checked against the receiver's clock
(:data:`CLOCK_SKEW_MS`). A request body has a random ``n``; a reply names the BLAKE2b
digest of its request body (``re``), so a reply cannot be passed off as the answer to
another request.

Replay (version 3; issue 11, item 5: a replayed push brought back a message its owner
had deleted, a replayed forward of a ``delete_all`` deleted a message stored after it).
A receiver accepts each request frame once: :class:`ReplayGuard` keeps the digest of
every request body it accepted, per sender, until ``t`` leaves the skew window (after
that the frame is refused as stale anyway), and refuses a copy with
:class:`ReplayedFrame` (``replayed``, 409). Memory is bounded per sender, and only
listed nodes reach the guard (it runs after the signature check). The guard is in
memory, so a node refuses frames stamped before it started. Replies need no guard:
a requester opens one reply per request, by its digest.

Owner proofs (version 3; issue 11, item 6: a listed node of another swarm wrote forged
posts into public-read namespaces). A message outside the inbox carries ``p``, its
owner's signed store (:mod:`veil.onion.rpc.proof`), and :func:`check_message` verifies
it with :func:`veil.onion.rpc.verify_store_proof`, on every path that takes messages
from a peer (push, handover, pulled page), so no node writes into an owner-written
namespace without the owner's signature, nor moves an expiry past what the owner
signed. An inbox message carries none (anyone may write there). A pull with
``"what": "deletions"`` asks instead for the owners' signed delete and delete_all
requests the peer executed (after the cursor ``after``): its page carries them in
``deletes`` and no messages, within the same batch limits, and the asker verifies each
one (node/replication/anti_entropy.py).

Revocations (version 4; issue 12, delegated session keys). A pull with ``"what":
"revocations"`` asks for the verified revocation records of delegated links the peer
keeps (after the cursor ``after``, for the asker's accounts): its page carries them in
``revocations`` and no messages, within the same batch limits, and the asker verifies
each one again (:func:`veil.onion.capability.verify_revocation`) before it keeps it. A
message's proof may carry a delegated key's chain (:mod:`veil.onion.rpc.proof`), so a
proof is now up to :data:`veil.onion.rpc.MAX_PROOF_BYTES` (16.6 KB) and a forwarded
request up to :data:`veil.onion.rpc.MAX_REQUEST_SIZE` (a ``revoke`` is forwarded too);
both still fit the largest class (asserted below).

Padding (version 2). A version 1 frame was as long as its content: a push after a
6,831-character message was 7,616 bytes on the link, so a watcher of node links read
message lengths off replication (and could match a push to the store that caused it).
Now every frame, request and reply of every kind, is exactly 2 KiB, 16 KiB or 128 KiB
(:data:`SIZE_CLASSES`, the classes of onion packet bodies, onion/packet.py), so the
length on the wire says only which class. The padding is inside the box, so it is
authenticated, and the receiver strips it strictly: a length field that runs past the
content, a non-zero pad byte, or a frame padded to a larger class than it needs is a
DecodeError (one content, one encoding). A node refuses frames of another version with a
SchemaError on ``v`` before any crypto (version 2 nodes refuse version 3 frames, and the
other way round), and the version byte is in the box's associated data.

Why these classes, measured with this module (frame bytes unpadded -> padded):

====================================  =========  ========  ======
frame                                 unpadded   padded    cost
====================================  =========  ========  ======
pull, pushed, empty page              ~372       2,048     x5.5
push of one 10-byte message           459        2,048     x4.5
push of one 256-byte envelope         708        2,048     x2.9
  (Padmé's smallest: most chat)
push of one 6,912-byte envelope       7,364      16,384    x2.2
push of 20 x 300 bytes                8,485      16,384    x1.9
push of one 76,800-byte message       77,256     131,072   x1.7
full batch, 256 x 230 bytes           86,365     131,072   x1.5
push just over the 2 KiB class        2,352      16,384    x7.0
push just over the 16 KiB class       16,452     131,072   x8.0
====================================  =========  ========  ======

* Padmé over the frame (onion/padding.py) costs at most 12%, but leaks O(log log L)
  bits: around 7 KiB it gives the length to 256 bytes, dozens of distinct lengths, so a
  watcher could still tell messages apart and match a push to the onion packet that
  stored it. Powers of two (7 classes from 2 KiB) cost at most x2 and still split the
  onion packet's classes further.
* The packet classes leak nothing new for the common case: the message arrived in an
  onion packet of one of these three classes, and its push (one message, at most
  1,596 bytes of data in 2 KiB and 15,932 in 16 KiB) is mostly in the same class; a
  message whose data is just under a packet class's capacity goes out in the next
  class up (a split of that one class, not a length). The cost is bounded (x8 at
  worst, about x3 for a typical chat message, x1.5 for full batches) and small in
  bytes where it is largest: a 2 KiB push per member per small message, on links
  between nodes, against the several 2 KiB packets the client's store already took.
  Pulls, acks and empty pages (the steady anti-entropy traffic) are 2 KiB each.

What a watcher still learns: that two nodes talk, when, which route (``/replicate``,
``/replicate/pull``, ``/replicate/forward`` are plain HTTP paths), the class of each
frame, and the number of frames, so a burst of pushes after a store still shows that a
store happened.

Kinds::

    push      {"messages": [msg, ...]}                       POST /replicate
    pushed    {"re", "stored": int, "refused": [hash, ...]}  its reply
    pull      {"after": seq, "scope": 24 bytes [, "what": "deletions" | "revocations"]}
                                                             POST /replicate/pull
    page      {"re", "messages": [msg, ...], "next": seq, "more": bool
               [, "deletes": [a signed delete or delete_all request, ...]]
               [, "revocations": [a revocation record, ...]]}  its reply
    forward   {"request": a client's signed storage request}  POST /replicate/forward
    forwarded {"re", "reply": the storage reply}             its reply
    msg       {"a": owner key (32: an account's X25519 key; 33: 0x03 + a group's
               Ed25519 key), "ns": int, "h": hash (32), "d": data,
               "ts": ms stored first, "exp": expiry ms,
               "p": the owner's proof (bytes, at most rpc.MAX_PROOF_BYTES; outside the
                    inbox only)}

Limits, checked before parsing: a frame is at most :data:`MAX_FRAME` bytes (the largest
class; it fits the peer pool's response limit and is the replication routes' body limit)
and then exactly one of :data:`SIZE_CLASSES`; a push or a page carries at most :data:`MAX_MESSAGES`
messages and :data:`BATCH_MAX_BYTES` counting ``len(data) + ITEM_OVERHEAD`` each (the
first message always fits; a proof counts in its message's :func:`batch_cost`).
:func:`check_message` does the checks that need the protocol's rules (the hash
recomputed, a valid account key, the TTL limit of the namespace against the receiver's
clock, the owner's proof). A full batch (or a lone message of the largest
body, a forwarded request, a storage reply) fits the largest class with room to spare:
the module asserts it at import.

Errors: every refusal is a typed :class:`~veil.onion.errors.VeilError`: TooLarge,
DecodeError (also a length off the classes, bad padding), SchemaError (shape, a
version other than 4), Unauthorized (unknown sender, a box that does not open, a bad
signature, a frame for another node, a message without its owner's valid proof),
ClockSkew (``t``), ReplayedFrame (a request frame already accepted), ProtocolError (a
message that breaks a rule).

Size: about 800 lines, 135 of them this note. One module on purpose: it is one wire
format, read top to bottom as a specification (the tests forge frames from it), and
every ``seal_*``/``open_*`` pair shares the private schemas, the key derivation and the
box; split, the format would be spread over files that each make sense only with the
others.
"""

from __future__ import annotations

import collections
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from veil.onion import crypto, rpc
from veil.onion.capability import ChainCache, RevocationLookup
from veil.onion.cbor import Field, Schema, decode, encode
from veil.onion.errors import (
    BadSignature,
    ClockSkew,
    DecodeError,
    IntegrityError,
    InvalidId,
    ProtocolError,
    RateLimited,
    ReplayedPacket,
    SchemaError,
    Unauthorized,
)
from veil.onion.keys import NodeKeys, OwnerId, owner_of_key
from veil.onion.replica import ReplicaMessage, ReplicaPage

__all__ = [
    "BATCH_MAX_BYTES",
    "CLOCK_SKEW_MS",
    "DOMAIN",
    "ITEM_OVERHEAD",
    "MAX_FRAME",
    "MAX_MESSAGES",
    "SCOPE_BYTES",
    "SIZE_CLASSES",
    "Forward",
    "Peer",
    "Pull",
    "Push",
    "PushAck",
    "ReplayGuard",
    "ReplayedFrame",
    "batch_cost",
    "check_message",
    "open_forward",
    "open_forwarded",
    "open_page",
    "open_pull",
    "open_push",
    "open_pushed",
    "seal_forward",
    "seal_forwarded",
    "seal_page",
    "seal_pull",
    "seal_push",
    "seal_pushed",
]

DOMAIN: Final = b"replicate"
_KDF_PURPOSE: Final = b"veil/replicate"
_AD_PREFIX: Final = b"veil/replicate"
#: 2: the sealed plaintext is padded so that every frame is one of SIZE_CLASSES long
#: (version 1 frames had the length of their content). 3: a message outside the inbox
#: carries its owner's proof (``p``), and request frames are accepted once. 4: pulls and
#: pages of revocations, proofs with a delegated key's chain, forwarded revokes.
FORMAT_VERSION: Final = 4
CLOCK_SKEW_MS: Final = 60_000
#: Messages in one push or page, at most.
MAX_MESSAGES: Final = 256
#: Upper bound of the CBOR bytes around one message's data in a batch.
ITEM_OVERHEAD: Final = 160
#: Byte budget of one push or page: ``len(data) + ITEM_OVERHEAD`` per message.
BATCH_MAX_BYTES: Final = 100_000
#: The lengths a frame may have (the whole HTTP body): those of onion packet bodies
#: (onion/packet.py), so that a push tells a link watcher no more than the packet that
#: brought its message did. See the module note.
SIZE_CLASSES: Final[tuple[int, ...]] = (2048, 16 * 1024, 128 * 1024)
#: Largest frame: the largest class. A full batch fits it (checked below), and it is
#: below node.peers.DEFAULT_MAX_RESPONSE_BYTES (144 KiB).
MAX_FRAME: Final = SIZE_CLASSES[-1]
_MAX_TIME_MS: Final = 2**63 - 1
_NONCE_BYTES: Final = 16
#: A pull's scope: the asker's swarm ID and its two ring neighbours (8 bytes each).
SCOPE_BYTES: Final = 24

_KEY = Field(bytes, size=32)
#: A message's owner: an account's X25519 key (32), or 0x03 + a group's Ed25519 key (33).
_OWNER = Field(bytes, min_len=32, max_len=33)
#: The padded plaintext starts with the length of the inner CBOR (big-endian u32).
_LENGTH = struct.Struct(">I")
_FRAME = Schema(
    "replicate.frame",
    {
        "v": Field(int, choices=frozenset({FORMAT_VERSION})),
        "from": _KEY,
        "to": _KEY,
        "nonce": Field(bytes, size=crypto.XNONCE_BYTES),
        "box": Field(bytes, min_len=crypto.AEAD_TAG_BYTES, max_len=MAX_FRAME),
    },
)
_INNER = Schema(
    "replicate.inner",
    {"body": Field(bytes, max_len=MAX_FRAME), "sig": Field(bytes, size=crypto.SIG_BYTES)},
)
_MESSAGE = Schema(
    "message",
    {
        "a": _OWNER,
        "ns": Field(int, min=rpc.NAMESPACE_MIN, max=rpc.NAMESPACE_MAX),
        "h": _KEY,
        "d": Field(bytes, min_len=1, max_len=rpc.MAX_BODY),
        "ts": Field(int, min=0, max=_MAX_TIME_MS),
        "exp": Field(int, min=0, max=_MAX_TIME_MS),
        "p": Field(bytes, min_len=1, max_len=rpc.MAX_PROOF_BYTES, required=False),
    },
)
_MESSAGES = Field(list, max_len=MAX_MESSAGES, items=Field(dict, schema=_MESSAGE))
_COMMON: Final = {
    "kind": Field(str, max_len=16),
    "from": _KEY,
    "to": _KEY,
    "t": Field(int, min=0, max=_MAX_TIME_MS),
}
_REQUEST: Final = {**_COMMON, "n": Field(bytes, size=_NONCE_BYTES)}
_REPLY: Final = {**_COMMON, "re": _KEY}
#: What a pull may ask for besides the rows.
_WHAT: Final = ("deletions", "revocations")
_BODIES: Final = {
    "push": Schema("push", {**_REQUEST, "messages": _MESSAGES}),
    "pushed": Schema(
        "pushed",
        {
            **_REPLY,
            "stored": Field(int, min=0, max=MAX_MESSAGES),
            "refused": Field(list, max_len=MAX_MESSAGES, items=_KEY),
        },
    ),
    "pull": Schema(
        "pull",
        {
            **_REQUEST,
            "after": Field(int, min=0, max=_MAX_TIME_MS),
            "scope": Field(bytes, size=SCOPE_BYTES),
            # Absent: the rows; "deletions": the owner's signed deletes kept there;
            # "revocations": the revocation records of delegated links kept there.
            "what": Field(str, choices=frozenset(_WHAT), required=False),
        },
    ),
    "forward": Schema(
        "forward",
        {**_REQUEST, "request": Field(bytes, min_len=1, max_len=rpc.MAX_REQUEST_SIZE)},
    ),
    "forwarded": Schema(
        "forwarded", {**_REPLY, "reply": Field(bytes, min_len=1, max_len=rpc.MAX_REPLY_SIZE)}
    ),
    "page": Schema(
        "page",
        {
            **_REPLY,
            "messages": _MESSAGES,
            "next": Field(int, min=0, max=_MAX_TIME_MS),
            "more": Field(bool),
            "deletes": Field(
                list,
                max_len=MAX_MESSAGES,
                items=Field(bytes, min_len=1, max_len=rpc.MAX_REQUEST_SIZE),
                required=False,
            ),
            "revocations": Field(
                list,
                max_len=MAX_MESSAGES,
                items=Field(bytes, min_len=1, max_len=rpc.MAX_RECORD),
                required=False,
            ),
        },
    ),
}


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


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a frame: its node ID and onion key (a ConsensusNode fits too)."""

    node_id: bytes
    onion_key: bytes


@dataclass(frozen=True, slots=True)
class Push:
    """A push, opened: who sent it, its messages (shape-checked only), its digest, and
    its time ``t`` (for the replay guard)."""

    sender: bytes
    messages: list[ReplicaMessage]
    digest: bytes
    sent_ms: int = 0


@dataclass(frozen=True, slots=True)
class PushAck:
    """The answer to a push: how many messages were new there, and which (by hash) the
    receiver refused because their account is not in its swarm."""

    stored: int
    refused: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class Forward:
    """A forwarded client request, opened: who forwards it, the request, its digest."""

    sender: bytes
    request: bytes
    digest: bytes
    sent_ms: int = 0


@dataclass(frozen=True, slots=True)
class Pull:
    """A pull, opened: who asks, for the rows after which seq, for which range of
    accounts as the asker sees it (``scope``), and its digest."""

    sender: bytes
    after: int
    scope: bytes
    digest: bytes
    sent_ms: int = 0
    #: True: a pull of the signed deletions kept there, not of its rows.
    deletions: bool = False
    #: True: a pull of the revocation records kept there.
    revocations: bool = False


class ReplayedFrame(ReplayedPacket):
    """A request frame (push, pull, forward) that the receiver has already accepted
    (``replayed``, 409): a copy taken off the wire, sent again."""


class ReplayGuard:
    """The request frames a node has accepted, per sender, while they could still pass
    the clock-skew check: so that each is accepted once (sans-IO; the caller passes the
    time).

    A frame is known by the digest of its signed body, which covers the sender's random
    ``n`` and its time ``t``; a frame passes the time check until ``t + window_ms``, and
    its digest is kept that long (then dropped: the frame is refused as stale anyway).
    Memory is bounded per sender (``max_per_peer`` live digests: over it, the sender's
    frames are refused ``rate_limited`` rather than a live digest forgotten), and only
    listed nodes reach it (the caller checks the frame's signature first), so one peer
    cannot crowd the others out. Senders whose digests have all expired are dropped.
    The guard lives in memory: a node refuses every frame stamped before it started
    (``not_before_ms``, ``clock_skew``), since it may have accepted that frame before a
    restart. Replies need no guard: each names the digest of its request (``re``), and
    a requester opens one reply per request.
    """

    def __init__(self, *, window_ms: int, max_per_peer: int, not_before_ms: int) -> None:
        self.window_ms = window_ms
        self.max_per_peer = max_per_peer
        self.not_before_ms = not_before_ms
        #: sender -> (digest -> until, the digests in the order they came with their until)
        self._seen: dict[bytes, tuple[dict[bytes, int], collections.deque[tuple[int, bytes]]]] = {}
        self._checks = 0

    def __len__(self) -> int:
        return sum(len(until) for until, _ in self._seen.values())

    def check(self, sender: bytes, digest: bytes, sent_ms: int, now_ms: int) -> None:
        """Accept the frame ``digest`` of ``sender`` stamped ``sent_ms`` once, or raise
        :class:`ReplayedFrame`, :class:`~veil.onion.errors.ClockSkew` (outside the window
        or before the start), :class:`~veil.onion.errors.RateLimited` (the sender's share
        is full of live digests)."""
        if abs(sent_ms - now_ms) > self.window_ms:
            raise ClockSkew(f"frame time {sent_ms} is more than {self.window_ms} ms from ours")
        if sent_ms < self.not_before_ms:
            raise ClockSkew("the frame is older than this node's start: send a new one")
        self._checks += 1
        if self._checks % 4096 == 0:
            self._drop_idle(now_ms)
        entry = self._seen.get(sender)
        if entry is None:
            entry = self._seen[sender] = ({}, collections.deque())
        until, order = entry
        self._expire(until, order, now_ms)
        if digest in until:
            raise ReplayedFrame("this frame was already received")
        if len(until) >= self.max_per_peer:
            raise RateLimited("too many frames from this node in the clock-skew window")
        # A frame passes the window check until t + window: keep its digest that long.
        until[digest] = sent_ms + self.window_ms
        order.append((sent_ms + self.window_ms, digest))

    @staticmethod
    def _expire(
        until: dict[bytes, int], order: collections.deque[tuple[int, bytes]], now_ms: int
    ) -> None:
        """Drop the digests whose frames can no longer pass the window check. Frames
        come roughly in time order; one that came out of order is dropped a little
        later than it could be (when the ones before it go), never earlier."""
        while order and order[0][0] < now_ms:
            _, digest = order.popleft()
            if until.get(digest, now_ms) < now_ms:
                del until[digest]

    def _drop_idle(self, now_ms: int) -> None:
        for sender in list(self._seen):
            until, order = self._seen[sender]
            self._expire(until, order, now_ms)
            if not until:
                del self._seen[sender]


PeerLookup = Callable[[bytes], Any]
"""Maps a node ID to its consensus entry (with ``onion_key``), or None if not listed."""


# --- costs ------------------------------------------------------------------------------


def batch_cost(message: ReplicaMessage) -> int:
    """What one message counts against :data:`BATCH_MAX_BYTES` (its proof included)."""
    proof = message.proof
    return len(message.data) + ITEM_OVERHEAD + (0 if proof is None else len(proof))


# --- sealing and opening frames -------------------------------------------------------------


def _box_key(keys: NodeKeys, peer: Any) -> bytes:
    shared = crypto.x25519(keys.onion_secret, peer.onion_key)
    a, b = sorted((keys.identity_public, peer.node_id))
    return crypto.kdf(shared, _KDF_PURPOSE, context=a + b)


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


# --- the four kinds ----------------------------------------------------------------------------


def seal_push(
    keys: NodeKeys, peer: Any, messages: Sequence[ReplicaMessage], *, now_ms: int
) -> tuple[bytes, bytes]:
    """A push of ``messages`` to ``peer``: (frame, digest to check the reply with).

    :class:`ValueError` if the batch is over the limits (the caller cuts batches with
    :func:`batch_cost`).
    """
    _check_batch(messages)
    nonce = os.urandom(_NONCE_BYTES)
    return _seal(
        keys, peer, "push", {"n": nonce, "messages": [_message_wire(m) for m in messages]}, now_ms
    )


def open_push(
    frame: bytes, keys: NodeKeys, lookup: PeerLookup, *, now_ms: int, skew_ms: int = CLOCK_SKEW_MS
) -> Push:
    """Open a push sent to us by a node that ``lookup`` knows (see the module note)."""
    sender, body, digest = _open(frame, keys, lookup, "push", now_ms=now_ms, skew_ms=skew_ms)
    return Push(sender.node_id, _messages(body["messages"]), digest, body["t"])


def seal_pushed(
    keys: NodeKeys, peer: Any, digest: bytes, stored: int, refused: Sequence[bytes], *, now_ms: int
) -> bytes:
    """The answer to a push whose digest is ``digest``."""
    return _seal(
        keys, peer, "pushed", {"re": digest, "stored": stored, "refused": list(refused)}, now_ms
    )[0]


def open_pushed(
    frame: bytes,
    keys: NodeKeys,
    peer: Any,
    digest: bytes,
    *,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
) -> PushAck:
    """Open ``peer``'s answer to our push ``digest``."""
    body = _open_reply(frame, keys, peer, "pushed", digest, now_ms, skew_ms)
    return PushAck(body["stored"], frozenset(body["refused"]))


def seal_pull(
    keys: NodeKeys,
    peer: Any,
    after: int,
    scope: bytes,
    *,
    now_ms: int,
    deletions: bool = False,
    revocations: bool = False,
) -> tuple[bytes, bytes]:
    """A pull of ``peer``'s rows (``deletions``: of the signed deletions it keeps;
    ``revocations``: of its revocation records) after seq ``after`` for the accounts of
    ``scope`` (see node/replication/): (frame, digest)."""
    if deletions and revocations:
        raise ValueError("a pull asks for deletions or revocations, not both")
    fields: dict[str, Any] = {"n": os.urandom(_NONCE_BYTES), "after": after, "scope": scope}
    if deletions:
        fields["what"] = "deletions"
    elif revocations:
        fields["what"] = "revocations"
    return _seal(keys, peer, "pull", fields, now_ms)


def open_pull(
    frame: bytes, keys: NodeKeys, lookup: PeerLookup, *, now_ms: int, skew_ms: int = CLOCK_SKEW_MS
) -> Pull:
    sender, body, digest = _open(frame, keys, lookup, "pull", now_ms=now_ms, skew_ms=skew_ms)
    what = body.get("what")
    return Pull(
        sender.node_id,
        body["after"],
        body["scope"],
        digest,
        body["t"],
        deletions=what == "deletions",
        revocations=what == "revocations",
    )


def seal_page(keys: NodeKeys, peer: Any, digest: bytes, page: ReplicaPage, *, now_ms: int) -> bytes:
    """The answer to a pull: one page of rows."""
    _check_batch(page.messages)
    fields: dict[str, Any] = {
        "re": digest,
        "messages": [_message_wire(m) for m in page.messages],
        "next": page.next_seq,
        "more": page.more,
    }
    if page.deletes:
        if page.messages or page.revocations or _deletes_too_large(page.deletes):
            raise ValueError("a page of deletions carries no messages, within the batch limits")
        fields["deletes"] = list(page.deletes)
    if page.revocations:
        if page.messages or _deletes_too_large(page.revocations):
            raise ValueError("a page of revocations carries no messages, within the batch limits")
        fields["revocations"] = list(page.revocations)
    return _seal(keys, peer, "page", fields, now_ms)[0]


def _deletes_too_large(deletes: Sequence[bytes]) -> bool:
    return len(deletes) > 1 and sum(len(d) for d in deletes) > BATCH_MAX_BYTES


def open_page(
    frame: bytes,
    keys: NodeKeys,
    peer: Any,
    digest: bytes,
    *,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
) -> ReplicaPage:
    """Open ``peer``'s answer to our pull ``digest``."""
    body = _open_reply(frame, keys, peer, "page", digest, now_ms, skew_ms)
    deletes = tuple(body.get("deletes", ()))
    revocations = tuple(body.get("revocations", ()))
    if deletes and (body["messages"] or revocations or _deletes_too_large(deletes)):
        raise ProtocolError("a page of deletions carries no messages, within the batch limits")
    if revocations and (body["messages"] or _deletes_too_large(revocations)):
        raise ProtocolError("a page of revocations carries no messages, within the batch limits")
    return ReplicaPage(
        _messages(body["messages"]), body["next"], body["more"], deletes, revocations
    )


def seal_forward(keys: NodeKeys, peer: Any, request: bytes, *, now_ms: int) -> tuple[bytes, bytes]:
    """Forward a client's signed storage request (a delete, delete_all or expire that
    this node executed) to ``peer``: (frame, digest)."""
    fields = {"n": os.urandom(_NONCE_BYTES), "request": request}
    return _seal(keys, peer, "forward", fields, now_ms)


def open_forward(
    frame: bytes, keys: NodeKeys, lookup: PeerLookup, *, now_ms: int, skew_ms: int = CLOCK_SKEW_MS
) -> Forward:
    sender, body, digest = _open(frame, keys, lookup, "forward", now_ms=now_ms, skew_ms=skew_ms)
    return Forward(sender.node_id, body["request"], digest, body["t"])


def seal_forwarded(keys: NodeKeys, peer: Any, digest: bytes, reply: bytes, *, now_ms: int) -> bytes:
    """The answer to a forward: the storage reply the request got here."""
    return _seal(keys, peer, "forwarded", {"re": digest, "reply": reply}, now_ms)[0]


def open_forwarded(
    frame: bytes,
    keys: NodeKeys,
    peer: Any,
    digest: bytes,
    *,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
) -> bytes:
    """``peer``'s storage reply to our forward ``digest``."""
    return bytes(_open_reply(frame, keys, peer, "forwarded", digest, now_ms, skew_ms)["reply"])


# --- the rules a message must keep --------------------------------------------------------


def _account(key: bytes) -> OwnerId | None:
    # owner_of_key caches: the point check costs tens of microseconds and a batch often
    # repeats accounts; the answer is a pure function of the key.
    try:
        return owner_of_key(key)
    except InvalidId:
        return None


def check_message(
    m: ReplicaMessage,
    *,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
) -> OwnerId:
    """The message's owner (an account or a group), if the message keeps the protocol's rules; else
    :class:`ProtocolError` (or its :class:`Unauthorized` for a proof that fails).

    The account key must be a valid X25519 key, the hash must be
    :func:`veil.onion.rpc.message_hash` of (account, namespace, data), the first-stored time no
    later than our clock (plus the skew), and the expiry no further than the longest TTL
    of the namespace from now (plus the skew), since an ``expire`` may have moved it.
    An expiry already past is allowed here (the store skips such a message). Outside the
    inbox the message must carry its owner's proof, which must verify and allow the
    expiry (:func:`veil.onion.rpc.verify_store_proof`); an inbox message carries none.
    A proof by a delegated key is checked with its chain at its signed time, against the
    receiver's revocations (``is_revoked``) and with its cache of verified chains.
    """
    account = _account(m.account)
    if account is None:
        raise ProtocolError("message owner is not a valid account or group key")
    if not crypto.ct_equal(rpc.message_hash(account, m.namespace, m.data), m.hash):
        raise ProtocolError("message hash does not match its account, namespace and data")
    if m.timestamp_ms > now_ms + skew_ms:
        raise ProtocolError("message stored in the future")
    if m.expiry_ms > now_ms + rpc.max_ttl_ms(m.namespace) + skew_ms:
        raise ProtocolError(f"message expiry beyond the longest TTL of namespace {m.namespace}")
    rpc.verify_store_proof(
        account, m.namespace, m.hash, m.expiry_ms, m.proof, is_revoked=is_revoked, chains=chains
    )
    return account
