"""Identities: accounts, their IDs and recovery phrases, groups, and node keys.

An account is one 32-byte Ed25519 seed, all 256 bits from the OS CSPRNG. Everything
else is derived: the Ed25519 signing key, the X25519 key (libsodium's birational map),
and the account ID ``05`` + hex(X25519 public key), as in Session. The recovery phrase
is the whole seed as 24 BIP-39 words (256 bits + an 8-bit checksum).

IDs from outside are parsed strictly: prefix, length, lower- or upper-case hex, and the
key must be a point of prime order. For an account ID's X25519 key (a Montgomery
u-coordinate) that is checked by mapping it to its Edwards form and asking libsodium
whether that is a valid point; every key derived from an Ed25519 key passes, and the
low-order and twist points that an attacker could use do not.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field

from mnemonic import Mnemonic

from . import crypto
from .crypto import Rng, system_rng
from .errors import InvalidId, InvalidKey, InvalidPhrase

ACCOUNT_PREFIX = "05"
GROUP_PREFIX = "03"
ID_LENGTH = 66
PHRASE_WORDS = 24

_P = 2**255 - 19
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_bip39 = Mnemonic("english")
_WORDS = frozenset(_bip39.wordlist)


def _montgomery_to_edwards(u: int) -> bytes | None:
    """Edwards y = (u - 1) / (u + 1) mod p, encoded with sign bit 0; None if u = -1."""
    if (u + 1) % _P == 0:
        return None
    y = (u - 1) * pow(u + 1, -1, _P) % _P
    return y.to_bytes(32, "little")


def is_valid_x25519_public(pk: bytes) -> bool:
    """True for a canonical X25519 public key of a point in the prime-order subgroup."""
    if len(pk) != 32:
        return False
    u = int.from_bytes(pk, "little")
    if u >= _P:  # non-canonical (also catches a set top bit, which X25519 ignores)
        return False
    y = _montgomery_to_edwards(u)
    return y is not None and crypto.ed25519_is_valid_point(y)


def _parse_prefixed(text: str, prefix: str, kind: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidId(f"{kind} ID must be text")
    if len(text) != ID_LENGTH:
        raise InvalidId(f"{kind} ID must be {ID_LENGTH} characters, got {len(text)}")
    if not text.startswith(prefix):
        raise InvalidId(f"{kind} ID must start with {prefix!r}")
    body = text[2:]
    if not _HEX.fullmatch(body):
        raise InvalidId(f"{kind} ID must be hexadecimal after its prefix")
    return bytes.fromhex(body)


@dataclass(frozen=True, slots=True, order=True)
class AccountId:
    """A parsed account ID: ``05`` + hex of the account's X25519 public key."""

    x25519_public: bytes

    def __post_init__(self) -> None:
        if not is_valid_x25519_public(self.x25519_public):
            raise InvalidId("account ID does not hold a valid X25519 key")

    @classmethod
    def parse(cls, text: str) -> AccountId:
        if not isinstance(text, str):
            raise InvalidId("account ID must be text")
        return _parse_account_id(text)

    def __str__(self) -> str:
        return ACCOUNT_PREFIX + self.x25519_public.hex()

    @property
    def ring_position(self) -> int:
        """The account's 64-bit position on the swarm ring (Session's rule)."""
        pk = self.x25519_public
        pos = 0
        for i in range(0, 32, 8):
            pos ^= int.from_bytes(pk[i : i + 8], "big")
        return pos


@functools.lru_cache(maxsize=65536)
def _parse_account_id(text: str) -> AccountId:
    # The point check costs tens of microseconds and a node parses the same IDs over and
    # over; AccountId is immutable, so a bounded cache of parsed IDs is safe. Errors are
    # not cached (lru_cache does not cache raised exceptions).
    return AccountId(_parse_prefixed(text, ACCOUNT_PREFIX, "account"))


@dataclass(frozen=True, slots=True)
class GroupId:
    """An encryption session (group) ID: ``03`` + hex of the group's Ed25519 public key."""

    ed25519_public: bytes

    def __post_init__(self) -> None:
        if not crypto.ed25519_is_valid_point(self.ed25519_public):
            raise InvalidId("group ID does not hold a valid Ed25519 key")

    @classmethod
    def parse(cls, text: str) -> GroupId:
        if cls is GroupId and isinstance(text, str):
            return _parse_group_id(text)
        return cls(_parse_prefixed(text, GROUP_PREFIX, "group"))

    def __str__(self) -> str:
        return GROUP_PREFIX + self.ed25519_public.hex()

    @property
    def ring_position(self) -> int:
        """The group's 64-bit position on the swarm ring: the account rule over its
        Ed25519 key (the 32 bytes its ID shows)."""
        pk = self.ed25519_public
        pos = 0
        for i in range(0, 32, 8):
            pos ^= int.from_bytes(pk[i : i + 8], "big")
        return pos


@functools.lru_cache(maxsize=4096)
def _parse_group_id(text: str) -> GroupId:
    # As _parse_account_id: the point check (~35 us) is paid once per ID, not per message
    # that names it; GroupId is immutable, errors are not cached.
    return GroupId(_parse_prefixed(text, GROUP_PREFIX, "group"))


#: Whoever owns a swarm's storage: an account, or an encryption session (a group).
OwnerId = AccountId | GroupId


def owner_key(owner: AccountId | GroupId) -> bytes:
    """The bytes a node keys an owner's storage by (and the storage RPC signs and hashes):
    an account's 32-byte X25519 key, as always; a group's key prefixed by 0x03 (33 bytes),
    so that a group's rows and an account's can never share a key."""
    if isinstance(owner, AccountId):
        return owner.x25519_public
    return b"\x03" + owner.ed25519_public


@functools.lru_cache(maxsize=65536)
def owner_of_key(key: bytes) -> AccountId | GroupId:
    """The owner of :func:`owner_key` bytes; :class:`InvalidId` for anything else.
    Cached: the point check costs tens of microseconds (errors are not cached)."""
    if len(key) == 33 and key[0] == 0x03:
        return GroupId(key[1:])
    if len(key) == 32:
        return AccountId(key)
    raise InvalidId("an owner key is 32 bytes (an account) or 0x03 + 32 bytes (a group)")


def parse_owner(text: str) -> AccountId | GroupId:
    """An account (``05...``) or group (``03...``) ID; :class:`InvalidId` otherwise."""
    if isinstance(text, str) and text.startswith(GROUP_PREFIX):
        return GroupId.parse(text)
    return AccountId.parse(text)


# --- recovery phrases ------------------------------------------------------------------


def seed_to_phrase(seed: bytes) -> str:
    """The 24-word BIP-39 phrase (English list) of a 32-byte seed."""
    if len(seed) != 32:
        raise InvalidKey("a seed is 32 bytes")
    return _bip39.to_mnemonic(seed)


def phrase_to_seed(phrase: str) -> bytes:
    """The seed of a 24-word phrase; :class:`InvalidPhrase` says what is wrong with it.

    Case, surrounding blanks and runs of whitespace are forgiven; a wrong word count, an
    unknown word (named in the message) or a failed checksum are not.
    """
    words = unicodedata.normalize("NFKD", phrase).lower().split()
    if len(words) != PHRASE_WORDS:
        raise InvalidPhrase(
            f"a recovery phrase has {PHRASE_WORDS} words, this one has {len(words)}"
        )
    unknown = [w for w in words if w not in _WORDS]
    if unknown:
        shown = ", ".join(repr(w) for w in unknown[:3])
        raise InvalidPhrase(f"not a word of the recovery word list: {shown}")
    normalized = " ".join(words)
    if not _bip39.check(normalized):
        raise InvalidPhrase("the recovery phrase's checksum does not match: a word is wrong")
    return bytes(_bip39.to_entropy(normalized))


# --- accounts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Account:
    """An account's keys, all derived from its 32-byte seed. Never printed whole."""

    seed: bytes
    ed25519_secret: bytes = field(init=False)
    ed25519_public: bytes = field(init=False)
    x25519_secret: bytes = field(init=False)
    x25519_public: bytes = field(init=False)
    id: AccountId = field(init=False)

    def __post_init__(self) -> None:
        sk, pk = crypto.ed25519_keypair_from_seed(self.seed)
        object.__setattr__(self, "ed25519_secret", sk)
        object.__setattr__(self, "ed25519_public", pk)
        object.__setattr__(self, "x25519_secret", crypto.ed25519_to_x25519_private(sk))
        object.__setattr__(self, "x25519_public", crypto.ed25519_to_x25519_public(pk))
        object.__setattr__(self, "id", AccountId(self.x25519_public))

    @classmethod
    def generate(cls, rng: Rng = system_rng) -> Account:
        return cls(rng(32))

    @classmethod
    def from_phrase(cls, phrase: str) -> Account:
        return cls(phrase_to_seed(phrase))

    @property
    def phrase(self) -> str:
        return seed_to_phrase(self.seed)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        return crypto.sign(self.ed25519_secret, domain, message)

    def __repr__(self) -> str:
        return f"Account({self.id})"


@functools.lru_cache(maxsize=65536)
def account_id_of_ed25519(ed_pk: bytes) -> AccountId:
    """The account ID that belongs to an Ed25519 public key."""
    return AccountId(crypto.ed25519_to_x25519_public(ed_pk))


# --- nodes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class NodeKeys:
    """A node's long-term Ed25519 identity and its X25519 onion key.

    The identity signs the node's descriptor; the onion key is what clients build onion
    layers to. Both are stored by the node as their 32-byte secrets.
    """

    identity_seed: bytes
    onion_secret: bytes
    identity_secret: bytes = field(init=False)
    identity_public: bytes = field(init=False)
    onion_public: bytes = field(init=False)

    def __post_init__(self) -> None:
        if len(self.onion_secret) != 32:
            raise InvalidKey("an onion key is 32 bytes")
        sk, pk = crypto.ed25519_keypair_from_seed(self.identity_seed)
        object.__setattr__(self, "identity_secret", sk)
        object.__setattr__(self, "identity_public", pk)
        object.__setattr__(self, "onion_public", crypto.x25519_public(self.onion_secret))

    @classmethod
    def generate(cls, rng: Rng = system_rng) -> NodeKeys:
        return cls(rng(32), rng(32))

    @property
    def node_id(self) -> str:
        """The node's ID: hex of its Ed25519 identity key."""
        return self.identity_public.hex()

    def sign(self, domain: bytes, message: bytes) -> bytes:
        return crypto.sign(self.identity_secret, domain, message)

    def __repr__(self) -> str:
        return f"NodeKeys({self.node_id[:16]}...)"


def parse_node_id(text: str) -> bytes:
    """A node ID (64 hex characters of a valid Ed25519 key) to its key bytes."""
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        raise InvalidId("a node ID is 64 hexadecimal characters")
    pk = bytes.fromhex(text)
    if not crypto.ed25519_is_valid_point(pk):
        raise InvalidId("node ID does not hold a valid Ed25519 key")
    return pk
