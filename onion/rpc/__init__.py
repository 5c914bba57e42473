"""The storage RPC: what a client asks a node's storage, and what the node answers.

Design note
-----------
Sans-IO and shared by node and client: bytes in, typed objects out, and builders so that
a client never hand-rolls a request or a signature. One module per job, re-exported
here (node and client code write ``from veil.onion import rpc`` and ``rpc.make_store``):

* :mod:`~veil.onion.rpc.limits`: sizes, TTLs, the methods;
* :mod:`~veil.onion.rpc.namespaces`: who may store and read where, and the TTL rule;
* :mod:`~veil.onion.rpc.canonical`: the byte strings that are hashed and signed;
* :mod:`~veil.onion.rpc.requests`: request types, their schemas, :func:`parse_request`;
* :mod:`~veil.onion.rpc.signing`: signing and :func:`verify_request` (the seam for
  delegated keys);
* :mod:`~veil.onion.rpc.proof`: the owner's signed store that travels with a replicated
  message, and :func:`verify_store_proof`;
* :mod:`~veil.onion.rpc.request_codec`: requests as bytes, with the unsigned-store hot path;
* :mod:`~veil.onion.rpc.builders`: ``make_*``, the client's requests;
* :mod:`~veil.onion.rpc.swarms`: the ``swarm`` map of ``wrong_swarm`` and ``get_swarm``;
* :mod:`~veil.onion.rpc.results`: the typed result of each method;
* :mod:`~veil.onion.rpc.replies`: the reply envelope, its codec and fast encoders.

Each imports only those above it in this list (and the rest of :mod:`veil.onion`).

Wire format (strict CBOR, :mod:`veil.onion.cbor`)::

    request: {"method": str, "params": {...}}
    reply:   {"status": "ok", "t": node_ms, "result": {...}}
             {"status": <wire status>, "t": node_ms, "error": "message"}

Accounts and namespaces. ``pubkey`` is the account ID (``05`` + hex of its X25519 key).
A namespace is an int in [-32768, 32767]:

* ``0`` is the inbox: anyone may store (unsigned, so the node does not learn the
  sender); only the owner retrieves, deletes or changes expiries;
* ``1 .. 32767`` are private: the owner alone stores and reads;
* ``-32768 .. -1`` are public-read: the owner alone stores; anyone retrieves unsigned
  (channel posts: a follower does not identify itself).

TTL is 10 s to 14 days in the inbox and up to 30 days in the owner-written namespaces
(private and public-read): Session's limits, where the shorter one applies to what
anyone may write. A TTL out of limits is a :class:`~veil.onion.errors.BadTtl` from the
wire, an :class:`~veil.onion.errors.InvalidTtl` (also a ``ValueError``) from a caller.

Authentication: see :mod:`~veil.onion.rpc.signing`. Every signed request may carry
``capability`` (a delegated session key's chain, at most :data:`MAX_CAPABILITY` bytes):
then ``pubkey_ed25519`` is the session key and the chain decides (issue 12).

Revocations: ``revoke`` (``{"pubkey": owner, "record": bytes}``, unsigned: the record is
signed) keeps a revocation of a delegated link (:func:`veil.onion.capability.revoke`) in
the owner's swarm: ``{"created": bool, "expiry": ms}``; every member then refuses the
revoked link and everything below it. Message hashes travel as raw 32-byte
CBOR byte strings: CBOR carries bytes natively, so there is no base64 or hex on the wire
(clients show them in hex).

Swarms: see :mod:`~veil.onion.rpc.swarms`. ``get_swarm`` answers the account's swarm map
from any node, with the epoch of the consensus it comes from:
``{"swarm": {...}, "epoch": int}``. A node that has no consensus yet answers
``unavailable``.

Sizes. A request is at most :data:`MAX_REQUEST_SIZE` (a full message body plus room for
the rest), checked before parsing. A retrieve answer stops at :data:`RETRIEVE_MAX_BYTES`
(counting ``len(data) + RETRIEVE_ITEM_OVERHEAD`` per message, the first message always
included) and :data:`RETRIEVE_MAX_LIMIT` messages, so every reply fits in
:data:`MAX_REPLY_SIZE`, below the onion's largest size class (128 KiB); ``more`` tells the
client to ask again from the last hash.
"""

from __future__ import annotations

from .builders import (
    make_delete,
    make_delete_all,
    make_expire,
    make_get_swarm,
    make_info,
    make_retrieve,
    make_revoke,
    make_store,
)
from .canonical import message_hash
from .limits import (
    CLOCK_SKEW_MS,
    DAY_MS,
    ID_TEXT_LENGTH,
    INBOX,
    MAX_BODY,
    MAX_CAPABILITY,
    MAX_ERROR_CHARS,
    MAX_HASHES,
    MAX_RECORD,
    MAX_REPLY_SIZE,
    MAX_REQUEST_SIZE,
    MAX_SWARM_MEMBERS,
    MAX_TTL_MS,
    MAX_TTL_PRIVATE_MS,
    MAX_WAIT_S,
    METHODS,
    MIN_TTL_MS,
    NAMESPACE_MAX,
    NAMESPACE_MIN,
    RETRIEVE_DEFAULT_LIMIT,
    RETRIEVE_ITEM_OVERHEAD,
    RETRIEVE_MAX_BYTES,
    RETRIEVE_MAX_LIMIT,
    ROOM_NAMESPACE,
)
from .namespaces import (
    check_ttl_ms,
    is_public_read,
    is_room,
    max_ttl_ms,
    read_needs_auth,
    store_needs_auth,
)
from .proof import (
    MAX_PROOF_BYTES,
    StoreProof,
    decode_proof,
    expiry_limit,
    proof_of_request,
    verify_store_proof,
)
from .replies import (
    _REPLY,
    Reply,
    decode_reply,
    encode_reply,
    error_reply,
    ok_reply,
    store_reply,
    swarm_of_reply,
)
from .request_codec import (
    _FAST_STORE_HEAD,
    _fast_unsigned_store,
    decode_request,
    encode_request,
)
from .requests import (
    _ENVELOPE,
    _PARAMS,
    Auth,
    DeleteAllRequest,
    DeleteRequest,
    ExpireRequest,
    GetSwarmRequest,
    InfoRequest,
    Request,
    RetrieveRequest,
    RevokeRequest,
    StoreRequest,
    parse_request,
)
from .results import (
    DeleteAllResult,
    DeleteResult,
    ExpireResult,
    GetSwarmResult,
    InfoResult,
    Message,
    Result,
    RetrieveResult,
    RevokeResult,
    StoreResult,
    parse_result,
)
from .signing import DOMAIN, GroupReader, sign_params, signing_message, verify_request
from .swarms import SwarmInfo, SwarmMember, SwarmMoved

__all__ = [
    "CLOCK_SKEW_MS",
    "DAY_MS",
    "DOMAIN",
    "ID_TEXT_LENGTH",
    "INBOX",
    "MAX_BODY",
    "MAX_CAPABILITY",
    "MAX_ERROR_CHARS",
    "MAX_HASHES",
    "MAX_PROOF_BYTES",
    "MAX_RECORD",
    "MAX_REPLY_SIZE",
    "MAX_REQUEST_SIZE",
    "MAX_SWARM_MEMBERS",
    "MAX_TTL_MS",
    "MAX_TTL_PRIVATE_MS",
    "MAX_WAIT_S",
    "METHODS",
    "MIN_TTL_MS",
    "NAMESPACE_MAX",
    "NAMESPACE_MIN",
    "RETRIEVE_DEFAULT_LIMIT",
    "RETRIEVE_ITEM_OVERHEAD",
    "RETRIEVE_MAX_BYTES",
    "RETRIEVE_MAX_LIMIT",
    "ROOM_NAMESPACE",
    "Auth",
    "DeleteAllRequest",
    "DeleteAllResult",
    "DeleteRequest",
    "DeleteResult",
    "ExpireRequest",
    "ExpireResult",
    "GetSwarmRequest",
    "GetSwarmResult",
    "GroupReader",
    "InfoRequest",
    "InfoResult",
    "Message",
    "Reply",
    "Request",
    "Result",
    "RetrieveRequest",
    "RetrieveResult",
    "RevokeRequest",
    "RevokeResult",
    "StoreProof",
    "StoreRequest",
    "StoreResult",
    "SwarmInfo",
    "SwarmMember",
    "SwarmMoved",
    "check_ttl_ms",
    "decode_proof",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "error_reply",
    "expiry_limit",
    "is_public_read",
    "is_room",
    "make_delete",
    "make_delete_all",
    "make_expire",
    "make_get_swarm",
    "make_info",
    "make_retrieve",
    "make_revoke",
    "make_store",
    "max_ttl_ms",
    "message_hash",
    "ok_reply",
    "parse_request",
    "parse_result",
    "proof_of_request",
    "read_needs_auth",
    "sign_params",
    "signing_message",
    "store_needs_auth",
    "store_reply",
    "swarm_of_reply",
    "verify_request",
    "verify_store_proof",
]

# Private names that tests reach through ``veil.onion.rpc`` (the fast paths' layouts and
# the schemas the CBOR fast check is compared on): kept importable from here.
_PRIVATE_FOR_TESTS = (_ENVELOPE, _PARAMS, _REPLY, _FAST_STORE_HEAD, _fast_unsigned_store)
