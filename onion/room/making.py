"""Making room records: the owner's metadata, a post, a moderation record.

Design note
-----------
Each builder checks its input against the format's bounds before anything is signed
(:class:`~veil.onion.errors.InvalidValue` otherwise) and returns the record parsed back
by :func:`~veil.onion.room.records.decode_room_record`, so what a caller holds is
exactly what every node and reader will read. A post or moderation record may be signed
by the account itself (an :class:`~veil.onion.keys.Account`) or by a delegated key
(a :class:`~veil.onion.capability.DelegatedSigner` whose chain is the account's and
lets it ``store`` in the account's own room namespace, -2): the record then carries the
chain (``cap``), and a chain that does not grant that is refused here
(:class:`~veil.onion.errors.ActionNotCovered`), as every node would refuse the record.
"""

from __future__ import annotations

from ..capability.signer import DelegatedSigner
from ..crypto import Rng, system_rng
from ..errors import ActionNotCovered, InvalidValue, SchemaError
from ..keys import Account, AccountId
from .pow import check_bits
from .records import (
    DEFAULT_RATE,
    DEFAULT_SIZE,
    KINDS,
    MAX_TEXT_BYTES,
    NONCE_BYTES,
    RECORD_VERSION,
    ROOM_NAMESPACE,
    Moderation,
    RoomMeta,
    RoomPost,
    decode_room_record,
    solve_pow,
)

__all__ = ["make_meta", "make_moderation", "make_room_post"]

_MAX_TIME_MS = 2**63 - 1


def _sign(signer: Account | DelegatedSigner, kind: str, body: dict[str, object]) -> bytes:
    signed, unsigned, domain = KINDS[kind]
    body = {**body, "v": RECORD_VERSION, "t": kind, "k": signer.ed25519_public}
    if isinstance(signer, DelegatedSigner):
        body["cap"] = signer.chain.encoded
    body["sig"] = signer.sign(domain, unsigned.encode(body))
    return signed.encode(body)


def _acting(signer: Account | DelegatedSigner) -> AccountId:
    """The account ``signer`` acts for; :class:`ActionNotCovered` for a delegated key
    whose chain does not let it store in that account's room namespace."""
    if isinstance(signer, Account):
        return signer.id
    if not isinstance(signer, DelegatedSigner):
        raise InvalidValue("a room record is signed by an Account or a DelegatedSigner")
    owner = signer.owner
    if not isinstance(owner, AccountId):
        raise InvalidValue("a room record is signed for an account, not a group")
    missing = signer.missing("store", ROOM_NAMESPACE)
    if missing:
        raise ActionNotCovered(
            f"the key's capability does not grant {','.join(sorted(missing))} in the room "
            f"namespace {ROOM_NAMESPACE} of {owner}",
            action=min(missing),
            namespace=ROOM_NAMESPACE,
        )
    return owner


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
    supersedes). Signed by the owner's own key only. :class:`InvalidValue` for a value
    out of bounds."""
    if not isinstance(owner, Account):
        raise InvalidValue("room metadata is signed by the owner's Account")
    mods = sorted({m.x25519_public for m in moderators})
    body: dict[str, object] = {
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
        KINDS["meta"][1].check(
            {**body, "v": RECORD_VERSION, "t": "meta", "k": owner.ed25519_public}
        )
    except SchemaError as exc:
        raise InvalidValue(f"room metadata: {exc}") from None
    record = decode_room_record(_sign(owner, "meta", body))
    assert isinstance(record, RoomMeta)
    return record


def make_room_post(
    author: Account | DelegatedSigner,
    room: AccountId,
    text: str,
    *,
    now_ms: int,
    reply_to: bytes | None = None,
    pow_bits: int = 0,
    rng: Rng = system_rng,
) -> RoomPost:
    """A post by ``author`` (an account, or a key it delegated ``store`` in its room
    namespace) in ``room``, dated ``now_ms``, with ``pow_bits`` of work (the room's
    rule; about ``2**pow_bits`` hashes)."""
    _check_time(now_ms)
    check_bits(pow_bits)
    account = _acting(author)
    if not isinstance(room, AccountId):
        raise InvalidValue("a room is named by its AccountId")
    if not isinstance(text, str) or len(text.encode()) > MAX_TEXT_BYTES:
        raise InvalidValue(f"a post's text is at most {MAX_TEXT_BYTES} UTF-8 bytes")
    if reply_to is not None and (not isinstance(reply_to, bytes) or len(reply_to) != 32):
        raise InvalidValue("reply_to is a post ID (32 bytes)")
    body: dict[str, object] = {
        "v": RECORD_VERSION,
        "t": "post",
        "room": room.x25519_public,
        "a": account.x25519_public,
        "id": rng(NONCE_BYTES),
        "ts": now_ms,
        "text": text,
        "k": author.ed25519_public,
    }
    if isinstance(author, DelegatedSigner):
        body["cap"] = author.chain.encoded
    if reply_to is not None:
        body["re"] = reply_to
    if pow_bits:
        body["pw"] = solve_pow(body, pow_bits)
    record = decode_room_record(_sign(author, "post", body))
    assert isinstance(record, RoomPost)
    return record


def make_moderation(
    signer: Account | DelegatedSigner,
    room: AccountId,
    op: str,
    *,
    now_ms: int,
    post_ids: tuple[bytes, ...] | list[bytes] = (),
    who: AccountId | None = None,
    delete_past: bool = False,
    rng: Rng = system_rng,
) -> Moderation:
    """A moderation record by ``signer`` (the owner or a moderator, or a key one of them
    delegated ``store`` in its room namespace): ``delete`` (``post_ids``), ``ban``
    (``who``, ``delete_past``) or ``unban`` (``who``)."""
    _check_time(now_ms)
    _acting(signer)
    if not isinstance(room, AccountId):
        raise InvalidValue("a room is named by its AccountId")
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
    check = {**body, "v": RECORD_VERSION, "t": "mod", "k": signer.ed25519_public}
    if isinstance(signer, DelegatedSigner):
        check["cap"] = signer.chain.encoded
    try:
        KINDS["mod"][1].check(check)
    except SchemaError as exc:
        raise InvalidValue(f"moderation record: {exc}") from None
    record = decode_room_record(_sign(signer, "mod", body))
    assert isinstance(record, Moderation)
    return record
