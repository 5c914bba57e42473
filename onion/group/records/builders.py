"""Making a session's records: each built, signed under its kind's domain, and decoded
back, so that a builder never gives what :func:`~veil.onion.group.records.decode_record`
would refuse.

Design note
-----------
One function per kind (:mod:`~veil.onion.group.records.formats` has the formats):
:func:`make_genesis` (signed by the session key), :func:`make_member` (by the adder, the
issuer of the new member's link), :func:`make_revoke` (a capability revocation, signed
inside), :func:`make_epoch` (a fresh key, wrapped for the members and chained back to
its parents: :mod:`~veil.onion.group.records.epoch_keys`) and :func:`make_end`. A
caller's bad input (a time out of range, a policy, a key or a count out of bounds) is
refused before anything is signed. Who may build what is not checked here: the state's
rules (:mod:`~veil.onion.group.state`) judge the record, and
:mod:`~veil.onion.group.session` builds only what they accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ... import crypto
from ...capability import Chain, Revocation, Signer
from ...cbor import encode
from ...crypto import Rng, system_rng
from ...errors import InvalidKey, InvalidRights, InvalidValue
from ...keys import AccountId, GroupId
from ..limits import (
    END_DOMAIN,
    EPOCH_DOMAIN,
    GENESIS_DOMAIN,
    KEY_BYTES,
    MAX_METADATA,
    MAX_PARENTS,
    MAX_TIME_MS,
    MAX_WRAPS,
    MEMBER_DOMAIN,
    SALT_BYTES,
    VERSION,
)
from .epoch_keys import _back_key, _x25519_of_member, epoch_commitment, wrap_key
from .formats import (
    POLICIES,
    EndRecord,
    EpochRecord,
    GenesisRecord,
    MemberRecord,
    RevokeRecord,
    decode_record,
)

__all__ = ["make_end", "make_epoch", "make_genesis", "make_member", "make_revoke"]


def _check_time(now_ms: int) -> None:
    if type(now_ms) is not int or not 0 <= now_ms <= MAX_TIME_MS:
        raise InvalidValue("now_ms is a time in ms since the epoch")


def _sign(signer: Signer, domain: bytes, body: dict[str, Any]) -> bytes:
    body["sig"] = crypto.sign(signer.ed25519_secret, domain, encode(body))
    return encode(body)


def make_genesis(
    session_key: Signer,
    creator: AccountId,
    *,
    policy: str,
    metadata: str | None,
    now_ms: int,
) -> GenesisRecord:
    """The session's first record, signed by its key."""
    if policy not in POLICIES:
        raise InvalidRights(f"policy is one of {', '.join(sorted(POLICIES))}")
    if metadata is not None and (not isinstance(metadata, str) or len(metadata) > MAX_METADATA):
        raise InvalidValue(f"metadata is text of at most {MAX_METADATA} characters")
    _x25519_of_member(creator)
    _check_time(now_ms)
    body: dict[str, Any] = {
        "k": "genesis",
        "v": VERSION,
        "sid": session_key.ed25519_public,
        "creator": creator.x25519_public,
        "policy": policy,
        "iat": now_ms,
    }
    if metadata is not None:
        body["meta"] = metadata
    record = decode_record(_sign(session_key, GENESIS_DOMAIN, body))
    assert isinstance(record, GenesisRecord)
    return record


def make_member(
    adder: Signer,
    chain: Chain,
    *,
    wraps: Iterable[tuple[bytes, bytes]] = (),
    now_ms: int,
) -> MemberRecord:
    """The record that adds ``chain``'s audience, signed by ``adder`` (the chain's last
    issuer), with the heads' keys wrapped for it (``(epoch ID, wrap)`` pairs)."""
    _check_time(now_ms)
    if adder.ed25519_public != chain.links[-1].issuer:
        raise InvalidKey("a member record is signed by the issuer of the member's link")
    if not isinstance(chain.owner, GroupId):
        raise InvalidValue("a member's chain is of a session (a group), not an account")
    pairs = sorted(wraps)
    body: dict[str, Any] = {
        "k": "member",
        "v": VERSION,
        "sid": chain.owner.ed25519_public,
        "chain": chain.encoded,
        "wraps": [{"epoch": epoch, "key": key} for epoch, key in pairs],
        "iat": now_ms,
    }
    record = decode_record(_sign(adder, MEMBER_DOMAIN, body))
    assert isinstance(record, MemberRecord)
    return record


def make_revoke(revocation: Revocation) -> RevokeRecord:
    """The record that carries a capability revocation of a session's link."""
    if not isinstance(revocation.owner, GroupId):
        raise InvalidValue("the revocation is not of a session's link")
    body = {
        "k": "revoke",
        "v": VERSION,
        "sid": revocation.owner.ed25519_public,
        "rev": revocation.encoded,
    }
    record = decode_record(encode(body))
    assert isinstance(record, RevokeRecord)
    return record


def make_epoch(
    signer: Signer,
    session: bytes,
    members: Sequence[AccountId],
    *,
    parents: Iterable[tuple[bytes, bytes | None]] = (),
    authority: Chain | None = None,
    follows: Iterable[bytes] = (),
    now_ms: int,
    rng: Rng = system_rng,
) -> tuple[EpochRecord, bytes]:
    """A new key epoch: a fresh key wrapped for ``members`` (accounts), naming
    ``parents`` (``(epoch ID, key)`` pairs: the heads it merges; a key of None: the
    signer does not hold it, and the epoch carries no parent's key), signed by
    ``signer`` (the session key, or a holder of revoke whose chain is ``authority``,
    or, naming in ``follows`` the revocation records it made just before, a member
    entitled to those revocations, ``authority`` its membership chain).
    Returns the record and the new key."""
    _check_time(now_ms)
    members = sorted(set(members), key=lambda m: _x25519_of_member(m))
    if len(members) > MAX_WRAPS:
        raise InvalidValue(f"an epoch wraps its key for at most {MAX_WRAPS} members")
    parent_keys = dict(parents)
    if len(parent_keys) > MAX_PARENTS:
        raise InvalidValue(f"an epoch names at most {MAX_PARENTS} parents")
    if any(k is not None and len(k) != KEY_BYTES for k in parent_keys.values()):
        raise InvalidKey("an epoch key is 32 bytes")
    order = sorted(parent_keys)
    key = rng(KEY_BYTES)
    salt = rng(SALT_BYTES)
    carried = [parent_keys[p] for p in order]
    back = b""
    if all(k is not None for k in carried):
        back = crypto.aead_seal(
            _back_key(key, session, salt),
            bytes(crypto.XNONCE_BYTES),
            b"".join(k for k in carried if k is not None),
        )
    body: dict[str, Any] = {
        "k": "epoch",
        "v": VERSION,
        "sid": session,
        "salt": salt,
        "parents": order,
        "commit": epoch_commitment(key, session, salt),
        "back": back,
        "wraps": [
            {"to": m.x25519_public, "key": wrap_key(key, m, session, salt, rng=rng)}
            for m in members
        ],
        "iss": signer.ed25519_public,
        "iat": now_ms,
    }
    if authority is not None:
        body["auth"] = authority.encoded
    revs = sorted(set(follows))
    if revs:
        body["revs"] = revs
    record = decode_record(_sign(signer, EPOCH_DOMAIN, body))
    assert isinstance(record, EpochRecord)
    return record, key


def make_end(
    signer: Signer, session: bytes, *, authority: Chain | None = None, now_ms: int
) -> EndRecord:
    """The whole session's revocation, signed by the session key or a holder of revoke."""
    _check_time(now_ms)
    body: dict[str, Any] = {
        "k": "end",
        "v": VERSION,
        "sid": session,
        "iss": signer.ed25519_public,
        "iat": now_ms,
    }
    if authority is not None:
        body["auth"] = authority.encoded
    record = decode_record(_sign(signer, END_DOMAIN, body))
    assert isinstance(record, EndRecord)
    return record
