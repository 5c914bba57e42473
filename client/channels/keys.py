"""The secrets a home keeps for the channels it owns: seeds, private channels' keys, and
their invite links.

Design note
-----------
A channel's seed is sealed under a key derived from the home account's seed
(XChaCha20-Poly1305, the channel's ID as associated data), so ``channels.sqlite`` alone
gives no channel away; rooms keep their seeds the same way under a purpose of their own
(:func:`seal_account_seed`, :func:`open_account_seed`).

**Private channels.** Followers cannot be named (no membership list: that is the
point), so a private channel is not an encryption session with its followers as
members: it keeps its own key schedule. The channel holds a current *epoch key* (32
random bytes, sealed beside its seed under another key derived from the home account's
seed); each post's text, title, priority and tags are encrypted under it
(:mod:`veil.onion.channel.posts`). The invite link carries the key after ``#``
(:func:`channel_invite`): it is never sent to a node. :func:`revoke_invite` draws a new
epoch key for future posts: old invite holders keep reading the posts made before, and
see the later ones as *locked* (:mod:`veil.client.channels.following`).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Final

from veil.client.channels.store import open_db
from veil.client.errors import InvalidArgument, StateError
from veil.client.home import Home
from veil.onion import crypto
from veil.onion.channel import EPOCH_KEY_BYTES, epoch_id, format_channel_invite
from veil.onion.errors import IntegrityError
from veil.onion.keys import Account, AccountId

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = [
    "channel_invite",
    "is_private",
    "open_account_seed",
    "revoke_invite",
    "seal_account_seed",
]

SEED_PURPOSE: Final = b"veil/chan-seed"
_KEY_PURPOSE: Final = b"veil/chan-epkey"
_KEY_AD: Final = b"veil/channel-epoch-key/v1\x00"
_SEED_WHY: Final = "a channel's seed (kept sealed under the home account's key)"


def seal_account_seed(owner: Account, purpose: bytes, account: Account) -> bytes:
    """``account``'s seed sealed under a key of ``owner``'s seed for ``purpose``, the
    account's ID as associated data: nonce || ciphertext."""
    nonce = os.urandom(crypto.XNONCE_BYTES)
    sealing = crypto.kdf(owner.seed, purpose)
    return nonce + crypto.aead_seal(sealing, nonce, account.seed, account.id.x25519_public)


def open_account_seed(
    owner: Account, purpose: bytes, account: AccountId, sealed: bytes, what: str
) -> Account:
    """The account sealed by :func:`seal_account_seed`; :class:`StateError` (naming
    ``what``) if it does not open with ``owner`` or is not ``account``'s seed."""
    nonce, box = sealed[: crypto.XNONCE_BYTES], sealed[crypto.XNONCE_BYTES :]
    try:
        seed = crypto.aead_open(crypto.kdf(owner.seed, purpose), nonce, box, account.x25519_public)
    except IntegrityError:
        raise StateError(f"{what}: its seed does not open with this account") from None
    opened = Account(seed)
    if opened.id != account:
        raise StateError(f"{what}: its seed is not its own")
    return opened


def seal_seed(client: VeilClient, channel: Account) -> bytes:
    return seal_account_seed(client.require_seed(_SEED_WHY), SEED_PURPOSE, channel)


def open_seed(client: VeilClient, name: str, channel: AccountId, sealed: bytes) -> Account:
    owner = client.require_seed(_SEED_WHY)
    return open_account_seed(owner, SEED_PURPOSE, channel, sealed, f"channel {name!r}")


def seal_key(owner: Account, channel: AccountId, key: bytes) -> bytes:
    """A private channel's epoch key sealed under a key of the home account's seed
    (another purpose than the channels' seeds), the channel's ID as associated data."""
    nonce = os.urandom(crypto.XNONCE_BYTES)
    sealing = crypto.kdf(owner.seed, _KEY_PURPOSE)
    return nonce + crypto.aead_seal(sealing, nonce, key, _KEY_AD + channel.x25519_public)


def open_key(owner: Account, channel: AccountId, sealed: bytes) -> bytes:
    nonce, box = sealed[: crypto.XNONCE_BYTES], sealed[crypto.XNONCE_BYTES :]
    sealing = crypto.kdf(owner.seed, _KEY_PURPOSE)
    try:
        key = crypto.aead_open(sealing, nonce, box, _KEY_AD + channel.x25519_public)
    except IntegrityError:
        raise StateError(f"channel {channel}: its key does not open with this account") from None
    if len(key) != EPOCH_KEY_BYTES:
        raise StateError(f"channel {channel}: its key is not {EPOCH_KEY_BYTES} bytes")
    return key


def private_row(where: VeilClient | Home, channel: AccountId) -> tuple[bytes, bytes | None] | None:
    """A private channel's sealed key and previous epoch ID; None for a public one."""
    db = open_db(where)
    try:
        row = db.execute(
            "SELECT key, previous FROM private WHERE channel = ?", (str(channel),)
        ).fetchone()
    finally:
        db.close()
    return None if row is None else (row[0], row[1])


def owner_account(where: VeilClient | Home, account: Account | None) -> Account:
    if account is not None:
        return account
    if isinstance(where, Home):
        raise StateError("a private channel's key needs the home account's seed")
    return where.require_seed("a private channel's key (kept sealed under the home account's key)")


def owned(where: VeilClient | Home, name_or_id: str) -> tuple[str, AccountId, bytes]:
    """A channel this home owns, by name or ID: its name, ID and sealed seed."""
    db = open_db(where)
    try:
        row = db.execute(
            "SELECT name, channel, seed FROM owned WHERE name = ? OR channel = ?",
            (name_or_id, name_or_id),
        ).fetchone()
    finally:
        db.close()
    if row is None:
        raise InvalidArgument(f"this home owns no channel {name_or_id[:80]!r}")
    return row[0], AccountId.parse(row[1]), row[2]


def is_private(where: VeilClient | Home, name_or_id: str) -> bool:
    """Whether a channel this home owns is private (no network, no seed)."""
    return private_row(where, owned(where, name_or_id)[1]) is not None


def revoke_invite(
    where: VeilClient | Home, name_or_id: str, *, account: Account | None = None
) -> tuple[bytes, bytes]:
    """Rotate a private channel's key (no network): a new epoch key for future posts,
    persisted sealed in this home. Returns the new key and the previous epoch ID; the
    new invite is ``format_channel_invite(channel, key)``."""
    name, channel, _ = owned(where, name_or_id)
    owner = owner_account(where, account)
    row = private_row(where, channel)
    if row is None:
        raise InvalidArgument(f"channel {name!r} is public: it has no invite key to revoke")
    previous = epoch_id(open_key(owner, channel, row[0]), channel)
    key = os.urandom(EPOCH_KEY_BYTES)
    db = open_db(where)
    try:
        db.execute(
            "UPDATE private SET key = ?, previous = ?, rotated_ms = ? WHERE channel = ?",
            (seal_key(owner, channel, key), previous, int(time.time() * 1000), str(channel)),
        )
    finally:
        db.close()
    return key, previous


def channel_invite(
    where: VeilClient | Home, name_or_id: str, *, account: Account | None = None
) -> str:
    """The link of a channel this home owns (no network): a public channel's needs no
    seed; a private channel's carries its current key, unsealed with the home
    account's seed (``account``, or the client's)."""
    _, channel, _ = owned(where, name_or_id)
    row = private_row(where, channel)
    if row is None:
        return format_channel_invite(channel)
    key = open_key(owner_account(where, account), channel, row[0])
    return format_channel_invite(channel, key)
