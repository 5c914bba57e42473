"""Room records: the owner's metadata, authors' posts, moderators' actions; proof of work.

Design note
-----------
A room (an open group, issue 16) is an account: its ID is the owner's account ID. Three
kinds of record live in its swarm, each a canonical CBOR map with a type ``t``, each
signed with Ed25519 under its own domain (:func:`veil.onion.crypto.sign` prefixes
``b"veil/" + domain + NUL``) over the same map without ``sig``::

    metadata  {"v": 1, "t": "meta", "room": owner X25519 (32), "seq": int,
               "name": str, "desc": str, "rate": posts/minute, "size": text bytes,
               "pow": bits, "mods": [account X25519 (32), ...] sorted, unique,
               "k": signer Ed25519 (32), "sig": (64)}            domain room-meta/v1
    post      {"v": 1, "t": "post", "room": (32), "a": author account X25519 (32),
               "id": nonce (16), "ts": ms, "text": str, ["re": post ID (32),]
               ["pw": PoW nonce (8),] "k": (32), "sig": (64)}    domain room-post/v1
    moderation {"v": 1, "t": "mod", "room": (32), "id": nonce (16), "ts": ms,
               "op": "delete" | "ban" | "unban", ["posts": [post ID, ...] (delete)],
               ["who": author account (ban, unban),] ["past": bool (ban)],
               "k": (32), "sig": (64)}                          domain room-mod/v1

The metadata is signed by the owner's own key (``k`` maps to ``room``); a newer one
(a higher ``seq``) supersedes. A post is signed by its author's own account key (``k``
maps to ``a``; ``a`` is kept apart from ``k`` so that a delegated key may sign later
without a new format). A moderation record is signed by the owner or by an account the
metadata lists as a moderator (judged by :class:`~veil.onion.room.state.RoomState`).

A record's ID is ``BLAKE2b-256(person="veil/room-rec-id", the signed bytes without
sig)``: it names what its signer signed, so an author cannot choose another author's
post ID, and a delete names posts by these IDs.

**Proof of work.** The room's ``pow`` bits ``d`` (0: none): the post's ``pw`` is an
8-byte nonce such that ``BLAKE2b-256(person="veil/room-pow", E || pw)`` starts with at
least ``d`` zero bits (big-endian bit order), ``E`` being the canonical encoding of the
post map without ``pw`` and ``sig``. So the work covers the room, author, nonce, time
and text (it cannot be reused for another post), and the signature covers ``pw``.

Every size is bounded before parsing (:data:`MAX_RECORD_BYTES`), then each field by
the schema; every refusal is a typed :class:`~veil.onion.errors.RoomError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from .. import crypto
from ..cbor import Field, Schema, decode
from ..crypto import Rng, system_rng
from ..errors import (
    BadRoomSignature,
    BadSignature,
    DecodeError,
    InsufficientWork,
    InvalidId,
    InvalidKey,
    InvalidValue,
    MalformedRoomRecord,
    RoomRecordTooLarge,
    SchemaError,
    TooLarge,
)
from ..keys import Account, AccountId, account_id_of_ed25519

__all__ = [
    "DEFAULT_RATE",
    "DEFAULT_SIZE",
    "MAX_DESCRIPTION_CHARS",
    "MAX_MODERATORS",
    "MAX_NAME_CHARS",
    "MAX_POW_BITS",
    "MAX_RATE",
    "MAX_RECORD_BYTES",
    "MAX_TEXT_BYTES",
    "META_DOMAIN",
    "MOD_DOMAIN",
    "POST_DOMAIN",
    "RATE_WINDOW_MS",
    "Moderation",
    "RoomMeta",
    "RoomPost",
    "RoomRecord",
    "check_pow",
    "decode_room_record",
    "leading_zero_bits",
    "make_meta",
    "make_moderation",
    "make_room_post",
    "solve_pow",
]

VERSION: Final = 1
META_DOMAIN: Final = b"room-meta/v1"
POST_DOMAIN: Final = b"room-post/v1"
MOD_DOMAIN: Final = b"room-mod/v1"
_ID_PURPOSE: Final = b"veil/room-rec-id"
_POW_PURPOSE: Final = b"veil/room-pow"

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
#: The most work a room may ask (2^24 hashes is seconds of an honest poster's CPU).
MAX_POW_BITS: Final = 24
MAX_DELETE_IDS: Final = 64
NONCE_BYTES: Final = 16
POW_NONCE_BYTES: Final = 8
#: Any record, whole: a metadata record's description and moderators dominate.
MAX_RECORD_BYTES: Final = 4 * MAX_DESCRIPTION_CHARS + 4 * MAX_NAME_CHARS + 40 * MAX_MODERATORS + 512
_MAX_TIME_MS: Final = 2**63 - 1

_KEY = Field(bytes, size=32)
_TS = Field(int, min=0, max=_MAX_TIME_MS)
_META_FIELDS: Final = {
    "v": Field(int, choices=frozenset({VERSION})),
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
    "v": Field(int, choices=frozenset({VERSION})),
    "t": Field(str, choices=frozenset({"post"})),
    "room": _KEY,
    "a": _KEY,
    "id": Field(bytes, size=NONCE_BYTES),
    "ts": _TS,
    "text": Field(str, max_len=MAX_TEXT_BYTES),
    "re": Field(bytes, size=32, required=False),
    "pw": Field(bytes, size=POW_NONCE_BYTES, required=False),
    "k": _KEY,
}
_MOD_FIELDS: Final = {
    "v": Field(int, choices=frozenset({VERSION})),
    "t": Field(str, choices=frozenset({"mod"})),
    "room": _KEY,
    "id": Field(bytes, size=NONCE_BYTES),
    "ts": _TS,
    "op": Field(str, choices=frozenset({"delete", "ban", "unban"})),
    "posts": Field(list, min_len=1, max_len=MAX_DELETE_IDS, items=_KEY, required=False),
    "who": Field(bytes, size=32, required=False),
    "past": Field(bool, required=False),
    "k": _KEY,
}
_SIG = Field(bytes, size=crypto.SIG_BYTES)


def _schemas(name: str, fields: dict[str, Field]) -> tuple[Schema, Schema]:
    return Schema(name, {**fields, "sig": _SIG}), Schema(name + "_unsigned", fields)


_META, _META_U = _schemas("room_meta", _META_FIELDS)
_POST, _POST_U = _schemas("room_post", _POST_FIELDS)
_MOD, _MOD_U = _schemas("room_mod", _MOD_FIELDS)
_KINDS: Final = {
    "meta": (_META, _META_U, META_DOMAIN),
    "post": (_POST, _POST_U, POST_DOMAIN),
    "mod": (_MOD, _MOD_U, MOD_DOMAIN),
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
    """A post whose signature verified. ``post_id`` is its record ID."""

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


@dataclass(frozen=True, slots=True)
class Moderation:
    """A moderation record whose signature verified (its right is the state's to judge)."""

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


RoomRecord = RoomMeta | RoomPost | Moderation


# --- proof of work ----------------------------------------------------------------------


def leading_zero_bits(digest: bytes) -> int:
    """The number of leading zero bits of ``digest`` (big-endian bit order)."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def _work_prefix(work_bytes: bytes) -> hashlib.blake2b:
    return hashlib.blake2b(work_bytes, digest_size=32, person=_POW_PURPOSE)


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= MAX_POW_BITS:
        raise InvalidValue(f"proof-of-work difficulty is 0 to {MAX_POW_BITS} bits")
    return bits


def solve_pow(post_fields: dict[str, object], bits: int) -> bytes:
    """An 8-byte nonce whose work over ``post_fields`` (a post map without ``pw`` and
    ``sig``) reaches ``bits`` leading zero bits. About ``2**bits`` BLAKE2b calls."""
    _check_bits(bits)
    prefix = _work_prefix(_POST_U.encode({k: v for k, v in post_fields.items() if k != "pw"}))
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
    ``work_bytes`` (a :attr:`RoomPost.work_bytes`) reaches ``bits``."""
    _check_bits(bits)
    if bits == 0:
        return
    if pow_nonce is None:
        raise InsufficientWork(f"the room asks {bits} bits of work; the post has none")
    h = _work_prefix(work_bytes)
    h.update(pow_nonce)
    if leading_zero_bits(h.digest()) < bits:
        raise InsufficientWork(f"the post's work does not reach the room's {bits} bits")


# --- making records ---------------------------------------------------------------------


def _sign(account: Account, kind: str, body: dict[str, object]) -> bytes:
    signed, unsigned, domain = _KINDS[kind]
    body = {**body, "v": VERSION, "t": kind, "k": account.ed25519_public}
    body["sig"] = account.sign(domain, unsigned.encode(body))
    return signed.encode(body)


def _check_time(now_ms: int) -> None:
    if isinstance(now_ms, bool) or not isinstance(now_ms, int) or not 0 <= now_ms <= _MAX_TIME_MS:
        raise InvalidValue("now_ms is a time in ms")


def make_meta(
    owner: Account,
    *,
    seq: int,
    name: str,
    description: str = "",
    rate: int = DEFAULT_RATE,
    size: int = DEFAULT_SIZE,
    pow_bits: int = 0,
    moderators: tuple[AccountId, ...] | list[AccountId] | frozenset[AccountId] = (),
) -> RoomMeta:
    """The owner's signed metadata for its room (number ``seq``: a higher one
    supersedes). :class:`~veil.onion.errors.InvalidValue` for a value out of bounds."""
    mods = sorted({m.x25519_public for m in moderators})
    body = {
        "room": owner.id.x25519_public,
        "seq": seq,
        "name": name,
        "desc": description,
        "rate": rate,
        "size": size,
        "pow": pow_bits,
        "mods": mods,
    }
    try:
        _META_U.check({**body, "v": VERSION, "t": "meta", "k": owner.ed25519_public})
    except SchemaError as exc:
        raise InvalidValue(f"room metadata: {exc}") from None
    record = decode_room_record(_sign(owner, "meta", body))
    assert isinstance(record, RoomMeta)
    return record


def make_room_post(
    author: Account,
    room: AccountId,
    text: str,
    *,
    now_ms: int,
    reply_to: bytes | None = None,
    pow_bits: int = 0,
    rng: Rng = system_rng,
) -> RoomPost:
    """A post by ``author`` in ``room``, with ``pow_bits`` of work (the room's rule)."""
    _check_time(now_ms)
    _check_bits(pow_bits)
    if not isinstance(text, str) or len(text.encode()) > MAX_TEXT_BYTES:
        raise InvalidValue(f"a post's text is at most {MAX_TEXT_BYTES} UTF-8 bytes")
    if reply_to is not None and (not isinstance(reply_to, bytes) or len(reply_to) != 32):
        raise InvalidValue("reply_to is a post ID (32 bytes)")
    body: dict[str, object] = {
        "v": VERSION,
        "t": "post",
        "room": room.x25519_public,
        "a": author.id.x25519_public,
        "id": rng(NONCE_BYTES),
        "ts": now_ms,
        "text": text,
        "k": author.ed25519_public,
    }
    if reply_to is not None:
        body["re"] = reply_to
    if pow_bits:
        body["pw"] = solve_pow(body, pow_bits)
    record = decode_room_record(_sign(author, "post", body))
    assert isinstance(record, RoomPost)
    return record


def make_moderation(
    signer: Account,
    room: AccountId,
    op: str,
    *,
    now_ms: int,
    post_ids: tuple[bytes, ...] | list[bytes] = (),
    who: AccountId | None = None,
    delete_past: bool = False,
    rng: Rng = system_rng,
) -> Moderation:
    """A moderation record: ``delete`` (``post_ids``), ``ban`` (``who``, ``delete_past``)
    or ``unban`` (``who``)."""
    _check_time(now_ms)
    body: dict[str, object] = {"room": room.x25519_public, "id": rng(NONCE_BYTES), "ts": now_ms}
    if op == "delete":
        if who is not None or delete_past:
            raise InvalidValue("a delete names posts only")
        body["posts"] = sorted(set(post_ids))
    elif op in ("ban", "unban"):
        if who is None or post_ids:
            raise InvalidValue(f"{op} names one author")
        body["who"] = who.x25519_public
        if op == "ban":
            body["past"] = bool(delete_past)
        elif delete_past:
            raise InvalidValue("delete_past is for a ban")
    else:
        raise InvalidValue("a moderation op is delete, ban or unban")
    body["op"] = op
    try:
        _MOD_U.check({**body, "v": VERSION, "t": "mod", "k": signer.ed25519_public})
    except SchemaError as exc:
        raise InvalidValue(f"moderation record: {exc}") from None
    record = decode_room_record(_sign(signer, "mod", body))
    assert isinstance(record, Moderation)
    return record


# --- parsing ----------------------------------------------------------------------------


def _account(key: bytes, what: str) -> AccountId:
    try:
        return AccountId(key)
    except (InvalidId, InvalidValue) as exc:
        raise MalformedRoomRecord(f"the {what} is not an account ID: {exc}") from None


def decode_room_record(data: bytes) -> RoomRecord:
    """Parse a room record and check its signature against the key the record names
    (the owner's for metadata, the author's for a post; a moderation record's signer's
    right is the state's to judge). Typed :class:`~veil.onion.errors.RoomError` only:
    :class:`RoomRecordTooLarge` (before parsing), :class:`MalformedRoomRecord`,
    :class:`BadRoomSignature`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedRoomRecord("a room record is bytes")
    data = bytes(data)
    if len(data) > MAX_RECORD_BYTES:
        raise RoomRecordTooLarge(f"record of {len(data)} bytes; the most is {MAX_RECORD_BYTES}")
    try:
        raw = decode(data, max_size=MAX_RECORD_BYTES, max_depth=2, canonical=True)
        kind = raw.get("t") if isinstance(raw, dict) else None
        if not isinstance(kind, str) or kind not in _KINDS:
            raise MalformedRoomRecord("not a room record (no known type)")
        signed, unsigned_schema, domain = _KINDS[kind]
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
    try:
        signer = account_id_of_ed25519(key)
    except (InvalidKey, InvalidId):
        raise BadRoomSignature("the record's key is not a valid Ed25519 key") from None
    try:
        crypto.verify(key, domain, unsigned_bytes, obj["sig"])
    except BadSignature:
        raise BadRoomSignature("the record's signature does not verify") from None
    if kind == "meta":
        if signer != room:
            raise BadRoomSignature("room metadata is signed by the room's owner only")
        mods: list[bytes] = obj["mods"]
        if mods != sorted(set(mods)):
            raise MalformedRoomRecord("moderators are sorted and unique")
        return RoomMeta(
            room=room,
            seq=obj["seq"],
            name=obj["name"],
            description=obj["desc"],
            rate=obj["rate"],
            size=obj["size"],
            pow_bits=obj["pow"],
            moderators=frozenset(_account(m, "moderator") for m in mods),
            record_id=record_id,
            encoded=data,
        )
    if kind == "post":
        author = _account(obj["a"], "author")
        if signer != author:
            raise BadRoomSignature("the post is not signed by its author's key")
        text: str = obj["text"]
        if len(text.encode()) > MAX_TEXT_BYTES:
            raise RoomRecordTooLarge(f"a post's text is at most {MAX_TEXT_BYTES} bytes")
        return RoomPost(
            room=room,
            author=author,
            nonce=obj["id"],
            timestamp_ms=obj["ts"],
            text=text,
            reply_to=obj.get("re"),
            pow_nonce=obj.get("pw"),
            post_id=record_id,
            encoded=data,
            work_bytes=_POST_U.encode({k: v for k, v in unsigned.items() if k != "pw"}),
        )
    op: str = obj["op"]
    posts = obj.get("posts")
    who = obj.get("who")
    past = obj.get("past")
    if op == "delete":
        if posts is None or who is not None or past is not None or posts != sorted(set(posts)):
            raise MalformedRoomRecord("a delete names sorted, unique post IDs only")
    elif posts is not None or who is None or (op == "unban" and past is not None):
        raise MalformedRoomRecord(f"{op} names one author")
    elif op == "ban" and past is None:
        raise MalformedRoomRecord("a ban says whether it deletes past posts")
    return Moderation(
        room=room,
        signer=signer,
        nonce=obj["id"],
        timestamp_ms=obj["ts"],
        op=op,
        post_ids=frozenset(posts or ()),
        who=_account(who, "banned author") if who is not None else None,
        delete_past=bool(past),
        record_id=record_id,
        encoded=data,
    )
