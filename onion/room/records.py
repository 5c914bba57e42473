"""Room records: the owner's metadata, authors' posts, moderators' actions, and parsing.

Design note
-----------
A room (an open group, issue 16) is an account: its ID is the owner's account ID, and
its records live in that account's room namespace (:data:`ROOM_NAMESPACE`, -2), one
record per message. Three kinds, each a canonical CBOR map with a version ``v`` (2)
and a type ``t``, each signed with Ed25519 under its own domain
(:func:`veil.onion.crypto.sign` prefixes ``b"veil/" + domain + NUL``) over the same map
without ``sig``::

    metadata  {"v": 2, "t": "meta", "room": owner X25519 (32), "seq": int,
               "name": str, "desc": str, "rate": posts/minute, "size": text bytes,
               "pow": bits, "mods": [account X25519 (32), ...] sorted, unique,
               "k": signer Ed25519 (32), "sig": (64)}            domain room-meta/v1
    post      {"v": 2, "t": "post", "room": (32), "a": author account X25519 (32),
               "id": nonce (16), "ts": ms, "text": str, ["re": post ID (32),]
               ["pw": PoW nonce (8),] "k": (32), ["cap": chain,] "sig": (64)}
                                                                domain room-post/v1
    moderation {"v": 2, "t": "mod", "room": (32), "id": nonce (16), "ts": ms,
               "op": "delete" | "ban" | "unban", ["posts": [post ID, ...] (delete)],
               ["who": author account (ban, unban),] ["past": bool (ban)],
               "k": (32), ["cap": chain,] "sig": (64)}          domain room-mod/v1

**Who signs.** The metadata is signed by the owner's own key (``k`` maps to ``room``);
a newer one (a higher ``seq``) supersedes. A post is signed by its author ``a``, and a
moderation record by the account acting (the owner or a moderator, judged by
:class:`~veil.onion.room.state.RoomState`): either with the account's own key (``k``
maps to the account, no ``cap``) or with a *delegated key* (``k``) and ``cap``, its
capability chain (:mod:`veil.onion.capability`, at most 16 KiB). The chain's owner is
the acting account (for a post it must be ``a``; for a moderation record it names the
moderator), and it must let ``k`` make a ``store`` in the acting account's *own* room
namespace (-2; the ``post`` action, as for a channel's posts), checked by
:func:`~veil.onion.capability.authorize` at the record's own time ``ts`` with the
network's clock skew, and against the caller's revocations (``is_revoked``: a node's
index; a reader has none). So a key that account A delegated "post in rooms" posts (and
moderates, where A is a moderator) as A in *any* room: the grant is A's namespace, not
one room's. The signature covers the chain, so a record cannot be moved to another.

Version 1 (the sans-IO core before delegated keys) had no ``cap`` and is refused
(:class:`~veil.onion.errors.MalformedRoomRecord`): nothing stored it.

A record's ID is ``BLAKE2b-256(person="veil/room-rec-id", the signed bytes without
sig)``: it names what its signer signed, so an author cannot choose another author's
post ID, and a delete names posts by these IDs. Proof of work: :mod:`.pow`.

Every size is bounded before parsing (:data:`MAX_RECORD_BYTES`), then each field by
the schema; every refusal is a typed :class:`~veil.onion.errors.RoomError`: a forged or
badly delegated record is :class:`~veil.onion.errors.BadRoomSignature` (``unauthorized``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .. import crypto
from ..capability import MAX_CHAIN_SIZE, Chain, ChainCache, RevocationLookup, authorize
from ..cbor import Field, Schema, decode
from ..errors import (
    BadRoomSignature,
    BadSignature,
    CapabilityError,
    DecodeError,
    InvalidId,
    InvalidKey,
    InvalidValue,
    MalformedRoomRecord,
    RoomRecordTooLarge,
    SchemaError,
    TooLarge,
)
from ..keys import AccountId, account_id_of_ed25519
from ..rpc.limits import CLOCK_SKEW_MS, ROOM_NAMESPACE
from .pow import MAX_POW_BITS, POW_NONCE_BYTES, solve_work

__all__ = [
    "DEFAULT_RATE",
    "DEFAULT_SIZE",
    "MAX_DELETE_IDS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_MODERATORS",
    "MAX_NAME_CHARS",
    "MAX_RATE",
    "MAX_RECORD_BYTES",
    "MAX_TEXT_BYTES",
    "META_DOMAIN",
    "MOD_DOMAIN",
    "NONCE_BYTES",
    "POST_DOMAIN",
    "RATE_WINDOW_MS",
    "RECORD_VERSION",
    "ROOM_NAMESPACE",
    "Moderation",
    "RoomMeta",
    "RoomPost",
    "RoomRecord",
    "decode_room_record",
    "solve_pow",
]

RECORD_VERSION: Final = 2
META_DOMAIN: Final = b"room-meta/v1"
POST_DOMAIN: Final = b"room-post/v1"
MOD_DOMAIN: Final = b"room-mod/v1"
_ID_PURPOSE: Final = b"veil/room-rec-id"

MAX_NAME_CHARS: Final = 64
MAX_DESCRIPTION_CHARS: Final = 2048
MAX_MODERATORS: Final = 64
#: A post's text, in UTF-8 bytes (the node's bound; a room sets its own within it).
MAX_TEXT_BYTES: Final = 4096
DEFAULT_SIZE: Final = 2048
#: Posts per author per :data:`RATE_WINDOW_MS` (the node's bound; a room sets its own).
MAX_RATE: Final = 60
DEFAULT_RATE: Final = 10
RATE_WINDOW_MS: Final = 60_000
MAX_DELETE_IDS: Final = 64
NONCE_BYTES: Final = 16
#: Any record, whole: a metadata record's description and moderators, or a post's text
#: and a delegated key's chain, dominate.
MAX_RECORD_BYTES: Final = (
    4 * MAX_DESCRIPTION_CHARS + 4 * MAX_NAME_CHARS + 40 * MAX_MODERATORS + 512 + MAX_CHAIN_SIZE
)
_MAX_TIME_MS: Final = 2**63 - 1

_KEY = Field(bytes, size=32)
_TS = Field(int, min=0, max=_MAX_TIME_MS)
_VERSION = Field(int, choices=frozenset({RECORD_VERSION}))
_CAP = Field(bytes, min_len=1, max_len=MAX_CHAIN_SIZE, required=False)
_META_FIELDS: Final = {
    "v": _VERSION,
    "t": Field(str, choices=frozenset({"meta"})),
    "room": _KEY,
    "seq": Field(int, min=0, max=_MAX_TIME_MS),
    "name": Field(str, min_len=1, max_len=MAX_NAME_CHARS),
    "desc": Field(str, max_len=MAX_DESCRIPTION_CHARS),
    "rate": Field(int, min=1, max=MAX_RATE),
    "size": Field(int, min=1, max=MAX_TEXT_BYTES),
    "pow": Field(int, min=0, max=MAX_POW_BITS),
    "mods": Field(list, max_len=MAX_MODERATORS, items=_KEY),
    "k": _KEY,
}
_POST_FIELDS: Final = {
    "v": _VERSION,
    "t": Field(str, choices=frozenset({"post"})),
    "room": _KEY,
    "a": _KEY,
    "id": Field(bytes, size=NONCE_BYTES),
    "ts": _TS,
    "text": Field(str, max_len=MAX_TEXT_BYTES),
    "re": Field(bytes, size=32, required=False),
    "pw": Field(bytes, size=POW_NONCE_BYTES, required=False),
    "k": _KEY,
    "cap": _CAP,
}
_MOD_FIELDS: Final = {
    "v": _VERSION,
    "t": Field(str, choices=frozenset({"mod"})),
    "room": _KEY,
    "id": Field(bytes, size=NONCE_BYTES),
    "ts": _TS,
    "op": Field(str, choices=frozenset({"delete", "ban", "unban"})),
    "posts": Field(list, min_len=1, max_len=MAX_DELETE_IDS, items=_KEY, required=False),
    "who": Field(bytes, size=32, required=False),
    "past": Field(bool, required=False),
    "k": _KEY,
    "cap": _CAP,
}
_SIG = Field(bytes, size=crypto.SIG_BYTES)


def _schemas(name: str, fields: dict[str, Field]) -> tuple[Schema, Schema]:
    return Schema(name, {**fields, "sig": _SIG}), Schema(name + "_unsigned", fields)


META_SCHEMAS: Final = _schemas("room_meta", _META_FIELDS)
POST_SCHEMAS: Final = _schemas("room_post", _POST_FIELDS)
MOD_SCHEMAS: Final = _schemas("room_mod", _MOD_FIELDS)
#: kind -> (signed schema, unsigned schema, signature domain).
KINDS: Final = {
    "meta": (*META_SCHEMAS, META_DOMAIN),
    "post": (*POST_SCHEMAS, POST_DOMAIN),
    "mod": (*MOD_SCHEMAS, MOD_DOMAIN),
}


@dataclass(frozen=True, slots=True)
class RoomMeta:
    """A room's signed metadata (its rules and moderators)."""

    room: AccountId
    seq: int
    name: str
    description: str
    rate: int
    size: int
    pow_bits: int
    moderators: frozenset[AccountId]
    record_id: bytes
    encoded: bytes


@dataclass(frozen=True, slots=True)
class RoomPost:
    """A post whose signature (and delegated key's chain) verified. ``post_id`` is its
    record ID."""

    room: AccountId
    author: AccountId
    nonce: bytes
    timestamp_ms: int
    text: str
    reply_to: bytes | None
    pow_nonce: bytes | None
    post_id: bytes
    encoded: bytes
    #: The canonical encoding the work is over (the map without ``pw`` and ``sig``).
    work_bytes: bytes
    #: The signing key (the author's own, or a delegated key) and its chain, if any.
    key: bytes = b""
    cap: bytes | None = None


@dataclass(frozen=True, slots=True)
class Moderation:
    """A moderation record whose signature (and delegated key's chain) verified; its
    right is the state's to judge. ``signer`` is the account acting."""

    room: AccountId
    signer: AccountId
    nonce: bytes
    timestamp_ms: int
    op: str
    post_ids: frozenset[bytes]
    who: AccountId | None
    delete_past: bool
    record_id: bytes
    encoded: bytes
    key: bytes = b""
    cap: bytes | None = None


RoomRecord = RoomMeta | RoomPost | Moderation


def post_work_bytes(post_fields: dict[str, object]) -> bytes:
    """The bytes a post's work is over: its map without ``pw`` and ``sig``, canonical."""
    unsigned = POST_SCHEMAS[1]
    return unsigned.encode({k: v for k, v in post_fields.items() if k not in ("pw", "sig")})


def solve_pow(post_fields: dict[str, object], bits: int) -> bytes:
    """An 8-byte nonce whose work over ``post_fields`` (a post map without ``pw`` and
    ``sig``) reaches ``bits`` leading zero bits. About ``2**bits`` BLAKE2b calls."""
    return solve_work(post_work_bytes(post_fields), bits)


# --- parsing ----------------------------------------------------------------------------


def _account(key: bytes, what: str) -> AccountId:
    try:
        return AccountId(key)
    except (InvalidId, InvalidValue) as exc:
        raise MalformedRoomRecord(f"the {what} is not an account ID: {exc}") from None


def _acting_account(
    obj: Mapping[str, Any],
    kind: str,
    *,
    is_revoked: RevocationLookup | None,
    chains: ChainCache | None,
    skew_ms: int,
) -> AccountId:
    """The account a post or moderation record acts for (see the module note), once
    the key ``k`` is shown to act for it; :class:`BadRoomSignature` otherwise."""
    key: bytes = obj["k"]
    cap: bytes | None = obj.get("cap")
    if cap is None:
        try:
            signer = account_id_of_ed25519(key)
        except (InvalidKey, InvalidId):
            raise BadRoomSignature("the record's key is not a valid Ed25519 key") from None
        if kind == "post" and signer != _account(obj["a"], "author"):
            raise BadRoomSignature("the post is not signed by its author's key")
        return signer
    try:
        if kind == "post":
            account = _account(obj["a"], "author")
        else:
            owner = Chain.decode(cap).owner
            if not isinstance(owner, AccountId):
                raise BadRoomSignature("a moderator's chain is owned by an account")
            account = owner
        check = authorize if chains is None else chains.authorize
        check(
            cap,
            signer=key,
            account=account,
            method="store",
            namespace=ROOM_NAMESPACE,
            now_ms=obj["ts"],
            skew_ms=skew_ms,
            is_revoked=is_revoked,
        )
    except CapabilityError as exc:
        raise BadRoomSignature(
            f"the record's signature is by a key its chain does not allow: {exc}"
        ) from None
    return account


def decode_room_record(
    data: bytes,
    *,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
    skew_ms: int = CLOCK_SKEW_MS,
) -> RoomRecord:
    """Parse a room record and check that its signer signed it: the owner's key for
    metadata, the author's (or its delegated key's, by its chain at the record's time,
    ``skew_ms``, and ``is_revoked``) for a post; a moderation record's signer's right is
    the state's to judge. ``chains``: a node's cache of verified chains.

    Typed :class:`~veil.onion.errors.RoomError` only: :class:`RoomRecordTooLarge`
    (before parsing), :class:`MalformedRoomRecord`, :class:`BadRoomSignature`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedRoomRecord("a room record is bytes")
    data = bytes(data)
    if len(data) > MAX_RECORD_BYTES:
        raise RoomRecordTooLarge(f"record of {len(data)} bytes; the most is {MAX_RECORD_BYTES}")
    try:
        raw = decode(data, max_size=MAX_RECORD_BYTES, max_depth=2, canonical=True)
        kind = raw.get("t") if isinstance(raw, dict) else None
        if not isinstance(kind, str) or kind not in KINDS:
            raise MalformedRoomRecord("not a room record (no known type)")
        signed, unsigned_schema, domain = KINDS[kind]
        obj = signed.check(raw)
    except TooLarge as exc:
        raise RoomRecordTooLarge(str(exc)) from None
    except (DecodeError, SchemaError, InvalidValue, InvalidId) as exc:
        raise MalformedRoomRecord(f"not a room record: {exc}") from None
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    unsigned_bytes = unsigned_schema.encode(unsigned)
    record_id = crypto.hash32(unsigned_bytes, _ID_PURPOSE)
    room = _account(obj["room"], "room")
    key: bytes = obj["k"]
    if kind == "post" and len(obj["text"].encode()) > MAX_TEXT_BYTES:
        raise RoomRecordTooLarge(f"a post's text is at most {MAX_TEXT_BYTES} bytes")
    _check_shape(kind, obj)
    try:
        crypto.verify(key, domain, unsigned_bytes, obj["sig"])
    except (BadSignature, InvalidKey):
        raise BadRoomSignature("the record's signature does not verify") from None
    if kind == "meta":
        try:
            signer = account_id_of_ed25519(key)
        except (InvalidKey, InvalidId):
            raise BadRoomSignature("the record's key is not a valid Ed25519 key") from None
        if signer != room:
            raise BadRoomSignature("room metadata is signed by the room's owner only")
        return RoomMeta(
            room=room,
            seq=obj["seq"],
            name=obj["name"],
            description=obj["desc"],
            rate=obj["rate"],
            size=obj["size"],
            pow_bits=obj["pow"],
            moderators=frozenset(_account(m, "moderator") for m in obj["mods"]),
            record_id=record_id,
            encoded=data,
        )
    acting = _acting_account(obj, kind, is_revoked=is_revoked, chains=chains, skew_ms=skew_ms)
    if kind == "post":
        return RoomPost(
            room=room,
            author=acting,
            nonce=obj["id"],
            timestamp_ms=obj["ts"],
            text=obj["text"],
            reply_to=obj.get("re"),
            pow_nonce=obj.get("pw"),
            post_id=record_id,
            encoded=data,
            work_bytes=post_work_bytes(unsigned),
            key=key,
            cap=obj.get("cap"),
        )
    who = obj.get("who")
    return Moderation(
        room=room,
        signer=acting,
        nonce=obj["id"],
        timestamp_ms=obj["ts"],
        op=obj["op"],
        post_ids=frozenset(obj.get("posts") or ()),
        who=_account(who, "banned author") if who is not None else None,
        delete_past=bool(obj.get("past")),
        record_id=record_id,
        encoded=data,
        key=key,
        cap=obj.get("cap"),
    )


def _check_shape(kind: str, obj: Mapping[str, Any]) -> None:
    """What the schema cannot say: sorted, unique lists; each op's own fields."""
    if kind == "meta":
        mods = obj["mods"]
        if mods != sorted(set(mods)):
            raise MalformedRoomRecord("moderators are sorted and unique")
        return
    if kind != "mod":
        return
    op, posts, who, past = obj["op"], obj.get("posts"), obj.get("who"), obj.get("past")
    if op == "delete":
        if posts is None or who is not None or past is not None or posts != sorted(set(posts)):
            raise MalformedRoomRecord("a delete names sorted, unique post IDs only")
    elif posts is not None or who is None or (op == "unban" and past is not None):
        raise MalformedRoomRecord(f"{op} names one author")
    elif op == "ban" and past is None:
        raise MalformedRoomRecord("a ban says whether it deletes past posts")
