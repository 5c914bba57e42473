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
      follows (see state.py: "Rotation after a delegated revocation"), iat, sig
    end      (group-end/v1, signed by the session key or a holder of revoke)
      k "end", v 1, sid, iss, auth (as an epoch's), iat, sig

An epoch's ID is its record's digest. Its 32-byte key ``K`` (random) is

* wrapped for each member as in :mod:`veil.onion.envelope`'s seal, written out so that
  a deterministic ``rng`` reaches the ephemeral key (libsodium's ``crypto_box_seal``
  draws it inside): ``eph`` random, ``k || n = BLAKE2b(key=X25519(eph, member),
  person="veil/grp-wrap", eph_pk || member_x25519 || sid || salt)`` (56 bytes),
  ``wrap = eph_pk || XChaCha20-Poly1305(k, n, K, ad="veil/group-wrap/v1" NUL || sid ||
  salt || member_x25519)``: a wrap opens only for its member, session and epoch;
* committed: ``commit = BLAKE2b(key=K, person="veil/grp-commit", sid || salt)``, signed
  with the record, so every member checks that it got the key everybody got (a
  rotator cannot give two members two keys);
* chained back: ``back = XChaCha20-Poly1305(BLAKE2b(key=K, person="veil/grp-back", sid
  || salt), nonce 0, the parents' keys in "parents" order)`` (a key used once, so the
  zero nonce is sound): the holder of a head's key holds every earlier key, as a new
  Seald recipient reads the whole session, and a member revoked before an epoch holds
  no key of it or after it. ``back`` is empty when the rotator did not hold its
  parents' keys (a creator that made the session with ``encrypt_for_self=False`` and
  rotates with the session key alone): the history before it then reaches only those
  who held it already, and members added later read from that epoch on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from .. import crypto
from ..capability import Chain, Revocation, Signer
from ..capability.limits import MAX_CHAIN_SIZE, MAX_REVOCATION_SIZE
from ..cbor import Field, Schema, decode, encode
from ..crypto import Rng, system_rng
from ..errors import (
    BadRecordSignature,
    BadSignature,
    CapabilityError,
    DecodeError,
    IntegrityError,
    InvalidKey,
    InvalidRights,
    InvalidValue,
    MalformedRecord,
    RecordTooLarge,
    SchemaError,
    TooLarge,
)
from ..keys import AccountId, GroupId, is_valid_x25519_public
from .limits import (
    BACK_PURPOSE,
    COMMIT_PURPOSE,
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
    WRAP_AD,
    WRAP_BYTES,
    WRAP_PURPOSE,
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
    "epoch_commitment",
    "make_end",
    "make_epoch",
    "make_genesis",
    "make_member",
    "make_revoke",
    "open_back",
    "record_digest",
    "unwrap_key",
    "wrap_key",
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


# --- keys: wraps, commitments, the chain back ----------------------------------------


def _wrap_key_nonce(
    shared: bytes, eph_pk: bytes, member_x: bytes, sid: bytes, salt: bytes
) -> tuple[bytes, bytes]:
    context = eph_pk + member_x + sid + salt
    okm = crypto.kdf(shared, WRAP_PURPOSE, KEY_BYTES + crypto.XNONCE_BYTES, context)
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


def _x25519_of_member(member: AccountId) -> bytes:
    if not isinstance(member, AccountId):
        raise InvalidKey("a member is named by its AccountId")
    return member.x25519_public


def wrap_key(
    key: bytes, member: AccountId, session: bytes, salt: bytes, *, rng: Rng = system_rng
) -> bytes:
    """``key`` sealed for the member's account (its X25519 key; module note)."""
    member_x = _x25519_of_member(member)
    eph_sk, eph_pk = crypto.x25519_keypair(rng)
    k, n = _wrap_key_nonce(crypto.x25519(eph_sk, member_x), eph_pk, member_x, session, salt)
    return eph_pk + crypto.aead_seal(k, n, key, WRAP_AD + session + salt + member_x)


def unwrap_key(
    x25519_secret: bytes, x25519_public: bytes, wrapped: bytes, session: bytes, salt: bytes
) -> bytes:
    """The key of a wrap sealed for this X25519 key pair; :class:`IntegrityError` if it
    does not open (not ours, altered, of another session or epoch)."""
    if len(wrapped) != WRAP_BYTES:
        raise IntegrityError("a wrap has the wrong length")
    eph_pk = wrapped[:32]
    shared = crypto.x25519(x25519_secret, eph_pk)
    k, n = _wrap_key_nonce(shared, eph_pk, x25519_public, session, salt)
    return crypto.aead_open(k, n, wrapped[32:], WRAP_AD + session + salt + x25519_public)


def epoch_commitment(key: bytes, session: bytes, salt: bytes) -> bytes:
    return crypto.kdf(key, COMMIT_PURPOSE, 32, session + salt)


def _back_key(key: bytes, session: bytes, salt: bytes) -> bytes:
    return crypto.kdf(key, BACK_PURPOSE, 32, session + salt)


def open_back(epoch: EpochRecord, key: bytes) -> dict[bytes, bytes]:
    """The parents' keys of ``epoch``, from its key (none if it carries none);
    :class:`IntegrityError` if the chain back does not open."""
    if not epoch.back:
        return {}
    plain = crypto.aead_open(
        _back_key(key, epoch.session, epoch.salt), bytes(crypto.XNONCE_BYTES), epoch.back
    )
    return {
        parent: plain[i * KEY_BYTES : (i + 1) * KEY_BYTES] for i, parent in enumerate(epoch.parents)
    }


# --- builders --------------------------------------------------------------------------


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
