"""The replication frames' format: versions, limits, size classes and schemas.

Design note
-----------
Constants and CBOR schemas only (see the package note for what they mean); every
other module of the package reads the same numbers. The largest class holds a full
batch, a lone message of the largest body, a forwarded request and its reply:
node/replication relies on it, and padding.py asserts it at import.
"""

from __future__ import annotations

import struct
from typing import Final

from veil.onion import crypto, rpc
from veil.onion.cbor import Field, Schema

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
]

DOMAIN: Final = b"replicate"
_KDF_PURPOSE: Final = b"veil/replicate"
_AD_PREFIX: Final = b"veil/replicate"
#: 2: the sealed plaintext is padded so that every frame is one of SIZE_CLASSES long
#: (version 1 frames had the length of their content). 3: a message outside the inbox
#: carries its owner's proof (``p``), and request frames are accepted once. 4: pulls and
#: pages of revocations, proofs with a delegated key's chain, forwarded revokes. 5: pulls
#: and pages of summaries (anti-entropy asks what the peer holds before the rows).
FORMAT_VERSION: Final = 5
CLOCK_SKEW_MS: Final = 60_000
#: Messages in one push or page, at most.
MAX_MESSAGES: Final = 256
#: Entries of one summary page, at most (about 110 bytes each: the largest class holds
#: them with room to spare, asserted in padding.py).
MAX_SUMMARY: Final = 512
#: A summary names, for each row, where a pull of rows reaching it starts (``s``): the
#: sender reads its rows in chunks of at most this many (and BATCH_MAX_BYTES), so one
#: page of rows after ``s`` (MAX_MESSAGES, BATCH_MAX_BYTES) holds the whole chunk.
SUMMARY_CHUNK: Final = 32
#: Upper bound of the CBOR bytes around one message's data in a batch.
ITEM_OVERHEAD: Final = 160
#: Byte budget of one push or page: ``len(data) + ITEM_OVERHEAD`` per message.
BATCH_MAX_BYTES: Final = 100_000
#: The lengths a frame may have (the whole HTTP body): those of onion packet bodies
#: (onion/packet/), so that a push tells a link watcher no more than the packet that
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
#: One row of a summary: where a pull of rows reaching it starts, and what identifies
#: the copy (owner, namespace, hash, and the expiry the copy would carry).
_SUMMARY_ENTRY = Schema(
    "summary_entry",
    {
        "s": Field(int, min=0, max=_MAX_TIME_MS),
        "a": _OWNER,
        "ns": Field(int, min=rpc.NAMESPACE_MIN, max=rpc.NAMESPACE_MAX),
        "h": _KEY,
        "exp": Field(int, min=0, max=_MAX_TIME_MS),
    },
)
_COMMON: Final = {
    "kind": Field(str, max_len=16),
    "from": _KEY,
    "to": _KEY,
    "t": Field(int, min=0, max=_MAX_TIME_MS),
}
_REQUEST: Final = {**_COMMON, "n": Field(bytes, size=_NONCE_BYTES)}
_REPLY: Final = {**_COMMON, "re": _KEY}
#: What a pull may ask for besides the rows.
_WHAT: Final = ("deletions", "revocations", "summary")
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
            # "revocations": the revocation records of delegated links kept there;
            # "summary": what identifies each row, not the rows (anti_entropy.py).
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
            "summary": Field(
                list,
                max_len=MAX_SUMMARY,
                items=Field(dict, schema=_SUMMARY_ENTRY),
                required=False,
            ),
        },
    ),
}
