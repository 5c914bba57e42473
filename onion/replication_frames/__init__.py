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

    frame  = {"v": 5, "from": node ID (32), "to": node ID (32), "nonce": 24 bytes,
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
(:data:`CLOCK_SKEW_MS`). Issue 17 asked whether the signature (a sign and a verify,
about a fifth of a push's and its ack's crypto) is redundant under the box: it is not.
The box key is static-static, so whoever holds *one* node's onion secret can seal a frame
"from" any listed node to that node (key-compromise impersonation): forge the acks that
the store's ack rule counts, forward pushes that look like a member's, answer pulls for
any peer. The onion secret is the node's most used key (every onion packet to the node is
opened with it); the identity key only signs. So the signature stays
until the link layer (node/link) authenticates peers with a handshake that resists KCI,
after which frames sent over it need neither. The box key itself is derived once per
pair (:func:`_box_key`). A request body has a random ``n``; a reply names the BLAKE2b
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

Summaries (version 5; issue 17, anti-entropy's cost). A pull with ``"what": "summary"``
asks for what identifies the rows after the cursor (owner, namespace, hash, the expiry
the copy would carry) instead of the rows, up to :data:`MAX_SUMMARY` entries; each
names ``s``, the start of the chunk of at most :data:`SUMMARY_CHUNK` rows it was read
in, so that one page of rows pulled after ``s`` holds it. The asker pulls rows only
after the starts of rows it lacks (node/replication/anti_entropy.py): a round that finds
every row held (the steady state, pushes having brought them) sends no message data and
checks no proof. A summary is a claim, never taken as data: rows are still pulled and
checked one by one, and what the asker skips it holds itself.

Padding (version 2). A version 1 frame was as long as its content: a push after a
6,831-character message was 7,616 bytes on the link, so a watcher of node links read
message lengths off replication (and could match a push to the store that caused it).
Now every frame, request and reply of every kind, is exactly 2 KiB, 16 KiB or 128 KiB
(:data:`SIZE_CLASSES`, the classes of onion packet bodies, onion/packet/), so the
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
    pull      {"after": seq, "scope": 24 bytes
               [, "what": "deletions" | "revocations" | "summary"]}
                                                             POST /replicate/pull
    page      {"re", "messages": [msg, ...], "next": seq, "more": bool
               [, "deletes": [a signed delete or delete_all request, ...]]
               [, "revocations": [a revocation record, ...]]
               [, "summary": [{"s", "a", "ns", "h", "exp"}, ...]]}  its reply
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
version other than 5), Unauthorized (unknown sender, a box that does not open, a bad
signature, a frame for another node, a message without its owner's valid proof),
ClockSkew (``t``), ReplayedFrame (a request frame already accepted), ProtocolError (a
message that breaks a rule).

Where it lives. One wire format, split by job (each module imports only those above it
in this list; this package re-exports every public name, and the few private ones the
tests use to forge frames):

* :mod:`.format`: versions, limits, size classes, the CBOR schemas of frames and bodies;
* :mod:`.padding`: the size classes' plaintext lengths, padding and its strict removal;
* :mod:`.replay`: :class:`ReplayGuard`, each request frame accepted once;
* :mod:`.sealing`: the box key, sealing and opening a frame (signature, time, kind),
  messages on the wire, batch costs;
* :mod:`.kinds`: the opened frames and the ``seal_*``/``open_*`` pair of each kind;
* :mod:`.messages`: :func:`check_message`, the rules every copied message keeps.
"""

from __future__ import annotations

from veil.onion.replica import ReplicaMessage, ReplicaPage, SummaryEntry

from .format import (
    BATCH_MAX_BYTES,
    CLOCK_SKEW_MS,
    DOMAIN,
    FORMAT_VERSION,
    ITEM_OVERHEAD,
    MAX_FRAME,
    MAX_MESSAGES,
    MAX_SUMMARY,
    SCOPE_BYTES,
    SIZE_CLASSES,
    SUMMARY_CHUNK,
)
from .kinds import (
    Forward,
    Peer,
    Pull,
    Push,
    PushAck,
    open_forward,
    open_forwarded,
    open_page,
    open_pull,
    open_push,
    open_pushed,
    seal_forward,
    seal_forwarded,
    seal_page,
    seal_pull,
    seal_push,
    seal_pushed,
)
from .messages import check_message

# The tests forge frames from these (tests/test_replication_parts.py).
from .padding import _PLAINTEXT_SIZES
from .replay import ReplayedFrame, ReplayGuard
from .sealing import PeerLookup, _box_key, _message_wire, _seal, batch_cost

__all__ = [
    "BATCH_MAX_BYTES",
    "CLOCK_SKEW_MS",
    "DOMAIN",
    "FORMAT_VERSION",
    "ITEM_OVERHEAD",
    "MAX_FRAME",
    "MAX_MESSAGES",
    "MAX_SUMMARY",
    "SCOPE_BYTES",
    "SIZE_CLASSES",
    "SUMMARY_CHUNK",
    "_PLAINTEXT_SIZES",
    "Forward",
    "Peer",
    "PeerLookup",
    "Pull",
    "Push",
    "PushAck",
    "ReplayGuard",
    "ReplayedFrame",
    "ReplicaMessage",
    "ReplicaPage",
    "SummaryEntry",
    "_box_key",
    "_message_wire",
    "_seal",
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
