"""The signed records of an encryption session: their CBOR formats, signatures, digests.

Design note
-----------
A session's state is a *set* of records stored in the state namespace of its swarm
(:data:`~veil.onion.group.limits.STATE_NAMESPACE`). Each is one deterministic CBOR map,
decoded with ``canonical=True`` (one encoding per record, so the signed bytes are the
re-encoding without ``sig``), at most :data:`~veil.onion.group.limits.MAX_RECORD_SIZE`
bytes (checked before parsing), with a kind ``k`` and a version ``v``, and named by its
digest (BLAKE2b-256, person ``veil/grp-record``). ``sid`` is the session's Ed25519
public key (the group ID ``03`` + its hex); times are ms since the epoch. Every
signature is :func:`veil.onion.crypto.sign` under the kind's own domain, over the map
without ``sig``::

    genesis  (group-genesis/v1, signed by the session key)
      k "genesis", v 1, sid, creator: the creator's account (its X25519 key, the ID
      ``05...`` without its prefix), policy: "rights" or
      "delegation", meta: text (optional, <= 1024 characters, not encrypted), iat, sig
    member   (group-member/v1, signed by the adder: the last link's issuer)
      k "member", v 1, sid, chain: a capability chain (bytes) from the session key to
      the new member's account (every link's audience is an account, ``05...``: a
      member is known to others by its account ID, from which its Ed25519 key cannot
      be recovered; its own Ed25519 key exercises the link), whose links carry right sets
      (:mod:`~veil.onion.group.rights`), wraps: [{epoch: id, key: wrap}] (<= 16: the
      heads' keys, wrapped for the new member), iat, sig
    revoke   (no signature of its own: the capability revocation inside is signed)
      k "revoke", v 1, sid, rev: a capability revocation record (bytes) of a link of
      the session (:mod:`veil.onion.capability.revocations`)
    epoch    (group-epoch/v1, signed by the session key or a holder of revoke, or by
             the maker of the revocations it follows)
      k "epoch", v 1, sid, salt: 16 random bytes, parents: [epoch id] (sorted, <= 16;
      empty for a first epoch), commit: the key's commitment, back: the parents' keys
      encrypted under the new key, wraps: [{to: member's X25519 key, key: wrap}]
      (sorted by "to", <= 400), iss: the signer's Ed25519 key, auth: the signer's
      membership chain (absent when the session key signs), revs (optional): [revoke
      record digest] (sorted, 1 to 16): the revocations by the signer this epoch
      follows (see state/session_state.py: "Rotation after a delegated revocation"),
      iat, sig
    end      (group-end/v1, signed by the session key or a holder of revoke)
      k "end", v 1, sid, iss, auth (as an epoch's), iat, sig

What an epoch's key is and how it travels (wraps, the commitment, the chain back) is in
:mod:`~veil.onion.group.records.epoch_keys`; making and signing records in
:mod:`~veil.onion.group.records.builders`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from ... import crypto
from ...capability import Chain, Revocation
from ...capability.limits import MAX_CHAIN_SIZE, MAX_REVOCATION_SIZE
from ...cbor import Field, Schema, decode, encode
from ...errors import (
    BadRecordSignature,
    BadSignature,
    CapabilityError,
    DecodeError,
    MalformedRecord,
    RecordTooLarge,
    SchemaError,
    TooLarge,
)
from ...keys import AccountId, GroupId, is_valid_x25519_public
from ..limits import (
    DIGEST_BYTES,
    END_DOMAIN,
    EPOCH_DOMAIN,
    GENESIS_DOMAIN,
    KEY_BYTES,
    MAX_FOLLOWS,
    MAX_MEMBER_WRAPS,
    MAX_METADATA,
    MAX_PARENTS,
    MAX_RECORD_SIZE,
    MAX_TIME_MS,
    MAX_WRAPS,
    MEMBER_DOMAIN,
    RECORD_DIGEST_PURPOSE,
    SALT_BYTES,
    VERSION,
    WRAP_BYTES,
)

__all__ = [
    "DELEGATION",
    "POLICIES",
    "RIGHTS_POLICY",
    "EndRecord",
    "EpochRecord",
    "GenesisRecord",
    "MemberRecord",
    "Record",
    "RevokeRecord",
    "decode_record",
    "record_digest",
]

#: The two policies of who may revoke (Seald's current and earlier rules).
RIGHTS_POLICY: Final = "rights"
DELEGATION: Final = "delegation"
POLICIES: Final = frozenset({RIGHTS_POLICY, DELEGATION})

_TIME: Final = Field(int, min=0, max=MAX_TIME_MS)
_KEY: Final = Field(bytes, size=32)
_DIGEST: Final = Field(bytes, size=DIGEST_BYTES)
_SIG: Final = Field(bytes, size=crypto.SIG_BYTES)
_V: Final = Field(int, choices={VERSION})

_GENESIS: Final = Schema(
    "genesis",
    {
        "k": Field(str, choices={"genesis"}),
        "v": _V,
        "sid": _KEY,
        "creator": _KEY,
        "policy": Field(str, choices=POLICIES),
        "meta": Field(str, max_len=MAX_METADATA, required=False),
        "iat": _TIME,
        "sig": _SIG,
    },
)
_MEMBER_WRAP: Final = Schema("wrap", {"epoch": _DIGEST, "key": Field(bytes, size=WRAP_BYTES)})
_MEMBER: Final = Schema(
    "member",
    {
        "k": Field(str, choices={"member"}),
        "v": _V,
        "sid": _KEY,
        "chain": Field(bytes, max_len=MAX_CHAIN_SIZE),
        "wraps": Field(list, max_len=MAX_MEMBER_WRAPS, items=Field(dict, schema=_MEMBER_WRAP)),
        "iat": _TIME,
        "sig": _SIG,
    },
)
_REVOKE: Final = Schema(
    "revoke",
    {
        "k": Field(str, choices={"revoke"}),
        "v": _V,
        "sid": _KEY,
        "rev": Field(bytes, max_len=MAX_REVOCATION_SIZE),
    },
)
_EPOCH_WRAP: Final = Schema("wrap", {"to": _KEY, "key": Field(bytes, size=WRAP_BYTES)})
_EPOCH: Final = Schema(
    "epoch",
    {
        "k": Field(str, choices={"epoch"}),
        "v": _V,
        "sid": _KEY,
        "salt": Field(bytes, size=SALT_BYTES),
        "parents": Field(list, max_len=MAX_PARENTS, items=_DIGEST),
        "commit": _DIGEST,
        "back": Field(bytes, max_len=MAX_PARENTS * KEY_BYTES + crypto.AEAD_TAG_BYTES),
        "wraps": Field(list, max_len=MAX_WRAPS, items=Field(dict, schema=_EPOCH_WRAP)),
        "iss": _KEY,
        "auth": Field(bytes, max_len=MAX_CHAIN_SIZE, required=False),
        "revs": Field(list, max_len=MAX_FOLLOWS, items=_DIGEST, required=False),
        "iat": _TIME,
        "sig": _SIG,
    },
)
_END: Final = Schema(
    "end",
    {
        "k": Field(str, choices={"end"}),
        "v": _V,
        "sid": _KEY,
        "iss": _KEY,
        "auth": Field(bytes, max_len=MAX_CHAIN_SIZE, required=False),
        "iat": _TIME,
        "sig": _SIG,
    },
)
_SCHEMAS: Final = {
    "genesis": _GENESIS,
    "member": _MEMBER,
    "revoke": _REVOKE,
    "epoch": _EPOCH,
    "end": _END,
}
#: Nesting: record map > wraps list > wrap map.
_DEPTH: Final = 3


def record_digest(encoded: bytes) -> bytes:
    """The 32-byte name of a record (an epoch's ID)."""
    return crypto.hash32(encoded, RECORD_DIGEST_PURPOSE)


def _signed(obj: dict[str, Any]) -> bytes:
    return encode({key: value for key, value in obj.items() if key != "sig"})


def _decode_chain(data: bytes, what: str) -> Chain:
    try:
        return Chain.decode(data)
    except CapabilityError as exc:
        raise MalformedRecord(f"{what}: {exc}") from None


@dataclass(frozen=True, slots=True, repr=False)
class _Base:
    session: bytes
    issued_ms: int
    encoded: bytes
    digest: bytes
    _map: dict[str, Any] = field(compare=False)

    @property
    def session_id(self) -> GroupId:
        return GroupId(self.session)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.digest.hex()[:16]}.., iat={self.issued_ms})"


@dataclass(frozen=True, slots=True, repr=False)
class GenesisRecord(_Base):
    #: The creator's account's X25519 key (:attr:`creator_id` is its AccountId).
    creator: bytes
    policy: str
    metadata: str | None
    signature: bytes

    @property
    def creator_id(self) -> AccountId:
        """The creator's account (:class:`InvalidId` if the key is not valid)."""
        return AccountId(self.creator)

    def creator_is_valid(self) -> bool:
        return is_valid_x25519_public(self.creator)

    def verify_signature(self) -> None:
        _verify(self.session, GENESIS_DOMAIN, self._map, self.signature, "genesis")


@dataclass(frozen=True, slots=True, repr=False)
class MemberRecord(_Base):
    chain: Chain
    #: (epoch ID, the epoch's key wrapped for the new member)
    wraps: tuple[tuple[bytes, bytes], ...]
    signature: bytes

    @property
    def adder(self) -> bytes:
        """The Ed25519 key that added the member: the last link's issuer (the session
        key for a member added by the session itself)."""
        return self.chain.links[-1].issuer

    @property
    def member(self) -> AccountId:
        """The new member's account: the last link's audience."""
        account = self.chain.links[-1].audience_account
        assert account is not None  # checked by decode_record
        return account

    def verify_signature(self) -> None:
        _verify(self.adder, MEMBER_DOMAIN, self._map, self.signature, "member record")


@dataclass(frozen=True, slots=True, repr=False)
class RevokeRecord(_Base):
    revocation: Revocation

    @property
    def revoker(self) -> bytes:
        return self.revocation.revoker

    @property
    def link(self) -> bytes:
        return self.revocation.link


@dataclass(frozen=True, slots=True, repr=False)
class EpochRecord(_Base):
    salt: bytes
    parents: tuple[bytes, ...]
    commitment: bytes
    back: bytes
    #: (member's Ed25519 key, the key wrapped for it), sorted by key
    wraps: tuple[tuple[bytes, bytes], ...]
    issuer: bytes
    authority: Chain | None
    signature: bytes
    #: The revocations (their records' digests) this epoch follows: set when its signer
    #: writes it by virtue of having made them, without the revoke right (state.py).
    follows: tuple[bytes, ...]

    @property
    def epoch_id(self) -> bytes:
        return self.digest

    def wrap_for(self, member: AccountId) -> bytes | None:
        """The key wrapped for ``member``'s account, or None."""
        for to, wrapped in self.wraps:
            if to == member.x25519_public:
                return wrapped
        return None

    def verify_signature(self) -> None:
        _verify(self.issuer, EPOCH_DOMAIN, self._map, self.signature, "epoch")


@dataclass(frozen=True, slots=True, repr=False)
class EndRecord(_Base):
    issuer: bytes
    authority: Chain | None
    signature: bytes

    def verify_signature(self) -> None:
        _verify(self.issuer, END_DOMAIN, self._map, self.signature, "end record")


Record: TypeAlias = GenesisRecord | MemberRecord | RevokeRecord | EpochRecord | EndRecord


def _verify(key: bytes, domain: bytes, obj: dict[str, Any], sig: bytes, what: str) -> None:
    try:
        crypto.verify(key, domain, _signed(obj), sig)
    except BadSignature:
        raise BadRecordSignature(f"the {what}'s signature does not verify") from None


def decode_record(data: bytes) -> Record:
    """A record from its bytes: size (before parsing), canonical CBOR, schema, values;
    no signature is checked (:mod:`~veil.onion.group.state` does, after every cheaper
    check). :class:`RecordTooLarge` or :class:`MalformedRecord`."""
    if not isinstance(data, bytes):
        raise MalformedRecord("a record is a byte string")
    if len(data) > MAX_RECORD_SIZE:
        raise RecordTooLarge(f"a record of {len(data)} bytes is over {MAX_RECORD_SIZE}")
    try:
        obj = decode(data, max_size=MAX_RECORD_SIZE, max_depth=_DEPTH, canonical=True)
    except TooLarge as exc:  # pragma: no cover - checked above
        raise RecordTooLarge(str(exc)) from None
    except DecodeError as exc:
        raise MalformedRecord(str(exc)) from None
    kind = obj.get("k") if type(obj) is dict else None
    schema = _SCHEMAS.get(kind) if type(kind) is str else None
    if schema is None:
        raise MalformedRecord("a record is a map whose 'k' is a known kind")
    try:
        schema.check(obj)
    except SchemaError as exc:
        raise MalformedRecord(str(exc)) from None
    digest = record_digest(data)
    base = {"session": obj["sid"], "encoded": data, "digest": digest, "_map": obj}
    if kind == "genesis":
        return GenesisRecord(
            **base,
            issued_ms=obj["iat"],
            creator=obj["creator"],
            policy=obj["policy"],
            metadata=obj.get("meta"),
            signature=obj["sig"],
        )
    if kind == "member":
        wraps = tuple((w["epoch"], w["key"]) for w in obj["wraps"])
        if [w[0] for w in wraps] != sorted({w[0] for w in wraps}):
            raise MalformedRecord("a member record's wraps are sorted by epoch, no repeats")
        chain = _decode_chain(obj["chain"], "member record")
        if any(link.audience_account is None for link in chain.links):
            raise MalformedRecord("a membership link's audience is a member's account")
        return MemberRecord(
            **base,
            issued_ms=obj["iat"],
            chain=chain,
            wraps=wraps,
            signature=obj["sig"],
        )
    if kind == "revoke":
        try:
            revocation = Revocation.decode(obj["rev"])
        except CapabilityError as exc:
            raise MalformedRecord(f"revocation: {exc}") from None
        if not isinstance(revocation.owner, GroupId) or (
            revocation.owner.ed25519_public != obj["sid"]
        ):
            raise MalformedRecord("the revocation is not of this session's links")
        return RevokeRecord(**base, issued_ms=revocation.issued_ms, revocation=revocation)
    authority = _decode_chain(obj["auth"], f"{kind} authority") if "auth" in obj else None
    if kind == "epoch":
        parents = tuple(obj["parents"])
        if list(parents) != sorted(set(parents)):
            raise MalformedRecord("an epoch's parents are sorted, without repeats")
        if obj["back"] and len(obj["back"]) != KEY_BYTES * len(parents) + crypto.AEAD_TAG_BYTES:
            raise MalformedRecord("an epoch's 'back' is empty or holds one key per parent")
        wraps = tuple((w["to"], w["key"]) for w in obj["wraps"])
        if [w[0] for w in wraps] != sorted({w[0] for w in wraps}):
            raise MalformedRecord("an epoch's wraps are sorted by member, no repeats")
        follows = tuple(obj.get("revs", ()))
        if "revs" in obj and (not follows or list(follows) != sorted(set(follows))):
            raise MalformedRecord("an epoch's revs are sorted, without repeats, not empty")
        if follows and authority is None:
            raise MalformedRecord("an epoch that follows revocations carries its chain")
        return EpochRecord(
            **base,
            issued_ms=obj["iat"],
            salt=obj["salt"],
            parents=parents,
            commitment=obj["commit"],
            back=obj["back"],
            wraps=wraps,
            issuer=obj["iss"],
            authority=authority,
            signature=obj["sig"],
            follows=follows,
        )
    return EndRecord(
        **base,
        issued_ms=obj["iat"],
        issuer=obj["iss"],
        authority=authority,
        signature=obj["sig"],
    )
