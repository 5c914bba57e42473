"""Channels on the client (issue 14): create, post, follow, list.

Design note
-----------
A channel is an account whose public-read namespace
(:data:`~veil.onion.channel.CHANNEL_NAMESPACE`) holds its posts
(:mod:`veil.onion.channel.posts`). This module keeps what a home knows of channels in
``HOME/channels.sqlite`` (mode 0600): the channels it *owns* (name, and seed sealed
under a key derived from the home account's seed, so the file alone gives no channel
away: XChaCha20-Poly1305, the channel's ID as associated data) and the channels it
*follows* (position and the hashes already taken, per channel).

**Posting** (:meth:`Channel.post`): the post is signed (by the channel's key, or by a
delegated key allowed to ``post``: a posting job that holds no seed,
:meth:`Channel.delegated`) and stored by a store request signed by the same key,
through an onion path, at a node of the channel's swarm.

**Following** (:func:`follow`) is a loop of *unsigned* long-poll retrieves of the
channel's namespace: the request names the channel, never the follower, and goes
through an onion path, so the node sees a relay's address and the channel. Each
channel followed gets its own :class:`~veil.client.paths.PathSelector` (its own relays:
the guards are the home's, as Tor shares guards across circuits), a random start delay,
and a long-poll wait drawn anew for each poll, so the polls of two channels neither
share a path nor line up in time; nothing identifies the follower across them (no
key, no cookie, no session).

Every post is checked with :func:`~veil.onion.channel.verify_post` against the channel
it was read from; one that does not verify is dropped and counted
(:attr:`Follower.dropped`), never shown. Exactly once across restarts, as the inbox
(:mod:`veil.client.messaging`): for each post, its hash is recorded and the position
moved past it in one transaction, *then* it is yielded; a node's copies may come in
another order than another member's, so a poll after a restart reads the node's
namespace from the start and drops by hash what is held. ``since`` (ms) skips posts
dated before it.

**Private channels** (``create_channel(client, name, private=True)``). Followers
cannot be named (no membership list: that is the point), so a private channel is not
an encryption session with its followers as members: it keeps its own key schedule.
The channel holds a current *epoch key* (32 random bytes, sealed in this file beside
its seed, under another key derived from the home account's seed); each post's text,
title, priority and tags are encrypted under it and the post stays signed by the
channel's key over the ciphertext (:mod:`veil.onion.channel.posts`). The invite link
carries the key after ``#`` (:attr:`Channel.invite`): it is never sent to a node, and
a follower needs nothing else, no account and no identity. :meth:`Channel.revoke_invite`
draws a new epoch key for future posts and gives the new invite: old invite holders
keep reading the posts made before, and see the later ones as *locked*.

A follower with a key (:func:`follow` given ``veil://channel/<id>#<key>``) reads the
posts of that key's epoch. A post it cannot open (no key, or another epoch's) is
signed by the channel, so it is neither shown nor a forgery: it is counted apart
(:attr:`Follower.locked`) and said once through ``on_notice``: ``"no_key"``,
``"revoked"`` (the post is dated after a post this key opened, or names this key's
epoch as the one before it: the invite was revoked), or ``"other_key"`` (older than
the invite, or the invite was revoked more than once and nothing older is left). The
key is not stored: following again with another invite re-reads the posts it could not
open.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from veil.client.errors import InvalidArgument, StateError
from veil.client.home import Home
from veil.client.paths import PathSelector
from veil.onion import crypto, rpc
from veil.onion.capability import DelegatedSigner
from veil.onion.channel import (
    CHANNEL_NAMESPACE,
    DEFAULT_PRIORITY,
    EPOCH_KEY_BYTES,
    ChannelInvite,
    Post,
    epoch_id,
    format_channel_invite,
    make_post,
    parse_channel_invite,
    verify_post,
)
from veil.onion.errors import (
    ChannelError,
    IntegrityError,
    InvalidId,
    NetworkError,
    PostLocked,
    ProtocolError,
)
from veil.onion.keys import Account, AccountId

if TYPE_CHECKING:
    from veil.client.onion_client import OnionClient
    from veil.client.veil_client import VeilClient

__all__ = [
    "DEFAULT_POST_TTL_S",
    "NOTICES",
    "Channel",
    "ChannelInfo",
    "Follower",
    "channel_invite",
    "create_channel",
    "follow",
    "is_private",
    "list_channels",
    "open_channel",
    "revoke_invite",
]

DEFAULT_POST_TTL_S: Final = 7 * 86400
#: Long-poll waits are drawn from this range (s) for each poll (rpc.MAX_WAIT_S is 30).
WAIT_RANGE_S: Final = (12, 28)
MAX_BACKOFF_S: Final = 30.0
_MAX_NAME: Final = 64

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS owned (
    channel TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, seed BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS following (
    channel TEXT PRIMARY KEY, last_hash BLOB, dropped INTEGER NOT NULL DEFAULT 0,
    taken INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS taken (
    channel TEXT NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (channel, hash)
);
CREATE TABLE IF NOT EXISTS private (
    channel TEXT PRIMARY KEY, key BLOB NOT NULL, previous BLOB, rotated_ms INTEGER NOT NULL
);
"""
#: Columns added for private channels to tables of homes made before them.
_MIGRATIONS: Final = (
    "ALTER TABLE following ADD COLUMN locked INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE following ADD COLUMN epoch BLOB",
    "ALTER TABLE following ADD COLUMN epoch_ts INTEGER",
    "ALTER TABLE following ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE taken ADD COLUMN locked INTEGER NOT NULL DEFAULT 0",
)


def _db(where: VeilClient | Home) -> sqlite3.Connection:
    """The home's channel database (``where``: a client or a :class:`Home`)."""
    home = where if isinstance(where, Home) else where.home
    path = Path(home.path) / "channels.sqlite"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        for statement in _MIGRATIONS:
            with contextlib.suppress(sqlite3.OperationalError):  # the column is there
                db.execute(statement)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open {path}: {exc}") from exc
    return db


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A channel this home owns or follows."""

    id: AccountId
    name: str | None
    owned: bool
    taken: int = 0
    dropped: int = 0
    private: bool = False
    locked: int = 0

    def to_json(self) -> dict[str, object]:
        """Never the key: ``invite`` is the public link (``veil channel invite`` gives
        a private channel's)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "owned": self.owned,
            "private": self.private,
            "invite": format_channel_invite(self.id),
            "taken": self.taken,
            "dropped": self.dropped,
            "locked": self.locked,
        }


class Channel:
    """A channel to post to: its account (or a delegated key allowed to ``post``)."""

    def __init__(
        self,
        client: VeilClient,
        signer: Account | DelegatedSigner,
        *,
        name: str | None = None,
        key: bytes | None = None,
        previous: bytes | None = None,
    ) -> None:
        self.client = client
        self.signer = signer
        owner = signer.id if isinstance(signer, Account) else signer.owner
        if not isinstance(owner, AccountId):
            raise InvalidArgument("a channel is an account")
        if key is not None and (not isinstance(key, bytes) or len(key) != EPOCH_KEY_BYTES):
            raise InvalidArgument(f"a private channel's key is {EPOCH_KEY_BYTES} bytes")
        self.id: AccountId = owner
        self.name = name
        #: A private channel's current epoch key (None: a public channel).
        self.key = key
        #: The epoch ID before the current one (None: the first, or public).
        self.previous = previous

    @classmethod
    def delegated(
        cls, client: VeilClient, signer: DelegatedSigner, *, invite: str | None = None
    ) -> Channel:
        """A posting job's channel: a session key allowed to ``post`` (no seed); a
        private channel's job also takes its invite (the key after ``#``). A job
        started before :meth:`revoke_invite` keeps posting under the old key: restart
        it with the new invite."""
        key = None
        if invite is not None:
            parsed = parse_channel_invite(invite)
            if parsed.channel != signer.owner:
                raise InvalidArgument("the invite is another channel's")
            key = parsed.key
        return cls(client, signer, key=key)

    @property
    def private(self) -> bool:
        return self.key is not None

    @property
    def invite(self) -> str:
        """The channel's link: ``veil://channel/<id>``, and a private channel's current
        key after ``#`` (share it with followers only)."""
        return format_channel_invite(self.id, self.key)

    def revoke_invite(self) -> str:
        """A private channel only: a new epoch key for future posts (persisted in this
        home before it is used) and the new invite. Holders of the old invite keep the
        posts made before, and cannot read those made after."""
        if self.key is None:
            raise InvalidArgument("a public channel has no invite key to revoke")
        if not isinstance(self.signer, Account):
            raise InvalidArgument("revoking the invite needs the channel's home, not a job")
        self.key, self.previous = revoke_invite(self.client, str(self.id))
        return self.invite

    async def post(
        self,
        text: str,
        *,
        ttl: float = DEFAULT_POST_TTL_S,
        title: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        tags: tuple[str, ...] | list[str] = (),
    ) -> Post:
        """Sign and store a post (kept ``ttl`` seconds, up to 14 days)."""
        ttl_ms = round(ttl * 1000)
        rpc.check_ttl_ms(ttl_ms, CHANNEL_NAMESPACE)
        post = make_post(
            self.signer,
            text,
            now_ms=self.client.clock.now(),
            title=title,
            priority=priority,
            tags=tags,
            channel=self.id,
            epoch_key=self.key,
            previous=self.previous,
        )
        signer = self.signer

        def build(now_ms: int) -> bytes:
            return rpc.make_store(
                signer, post.encoded, ttl_ms, now_ms=now_ms, namespace=CHANNEL_NAMESPACE
            )

        await self.client.call(build, account=self.id)
        return post


def create_channel(client: VeilClient, name: str, *, private: bool = False) -> Channel:
    """A new channel (a fresh account) named ``name`` in this home; ``private``: its
    posts encrypted under a key that travels in its invite (see the module note)."""
    if not isinstance(name, str) or not 1 <= len(name) <= _MAX_NAME or not name.isprintable():
        raise InvalidArgument(f"a channel's name is 1 to {_MAX_NAME} printable characters")
    account = Account.generate()
    key = os.urandom(EPOCH_KEY_BYTES) if private else None
    owner = client._seed("a channel's seed (kept sealed under the home account's key)")
    now = int(time.time() * 1000)
    db = _db(client)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO owned (channel, name, seed, created_ms) VALUES (?, ?, ?, ?)",
            (str(account.id), name, _seal_seed(client, account), now),
        )
        if key is not None:
            db.execute(
                "INSERT INTO private (channel, key, previous, rotated_ms) VALUES (?, ?, NULL, ?)",
                (str(account.id), _seal_key(owner, account.id, key), now),
            )
        db.execute("COMMIT")
    except sqlite3.IntegrityError:
        db.execute("ROLLBACK")
        raise InvalidArgument(f"this home has a channel named {name!r} already") from None
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()
    return Channel(client, account, name=name, key=key)


_SEED_PURPOSE: Final = b"veil/chan-seed"


def _seed_key(client: VeilClient) -> bytes:
    owner = client._seed("a channel's seed (kept sealed under the home account's key)")
    return crypto.kdf(owner.seed, _SEED_PURPOSE)


_KEY_PURPOSE: Final = b"veil/chan-epkey"
_KEY_AD: Final = b"veil/channel-epoch-key/v1\x00"


def _seal_key(owner: Account, channel: AccountId, key: bytes) -> bytes:
    """A private channel's epoch key sealed under a key of the home account's seed
    (another purpose than the channels' seeds), the channel's ID as associated data."""
    nonce = os.urandom(crypto.XNONCE_BYTES)
    sealing = crypto.kdf(owner.seed, _KEY_PURPOSE)
    return nonce + crypto.aead_seal(sealing, nonce, key, _KEY_AD + channel.x25519_public)


def _open_key(owner: Account, channel: AccountId, sealed: bytes) -> bytes:
    nonce, box = sealed[: crypto.XNONCE_BYTES], sealed[crypto.XNONCE_BYTES :]
    sealing = crypto.kdf(owner.seed, _KEY_PURPOSE)
    try:
        key = crypto.aead_open(sealing, nonce, box, _KEY_AD + channel.x25519_public)
    except IntegrityError:
        raise StateError(f"channel {channel}: its key does not open with this account") from None
    if len(key) != EPOCH_KEY_BYTES:
        raise StateError(f"channel {channel}: its key is not {EPOCH_KEY_BYTES} bytes")
    return key


def _private_row(where: VeilClient | Home, channel: AccountId) -> tuple[bytes, bytes | None] | None:
    db = _db(where)
    try:
        row = db.execute(
            "SELECT key, previous FROM private WHERE channel = ?", (str(channel),)
        ).fetchone()
    finally:
        db.close()
    return None if row is None else (row[0], row[1])


def _owner_account(where: VeilClient | Home, account: Account | None) -> Account:
    if account is not None:
        return account
    if isinstance(where, Home):
        raise StateError("a private channel's key needs the home account's seed")
    return where._seed("a private channel's key (kept sealed under the home account's key)")


def is_private(where: VeilClient | Home, name_or_id: str) -> bool:
    """Whether a channel this home owns is private (no network, no seed)."""
    return _private_row(where, _owned(where, name_or_id)[1]) is not None


def revoke_invite(
    where: VeilClient | Home, name_or_id: str, *, account: Account | None = None
) -> tuple[bytes, bytes]:
    """Rotate a private channel's key (no network): a new epoch key for future posts,
    persisted sealed in this home. Returns the new key and the previous epoch ID; the
    new invite is ``format_channel_invite(channel, key)``."""
    name, channel, _ = _owned(where, name_or_id)
    owner = _owner_account(where, account)
    row = _private_row(where, channel)
    if row is None:
        raise InvalidArgument(f"channel {name!r} is public: it has no invite key to revoke")
    previous = epoch_id(_open_key(owner, channel, row[0]), channel)
    key = os.urandom(EPOCH_KEY_BYTES)
    db = _db(where)
    try:
        db.execute(
            "UPDATE private SET key = ?, previous = ?, rotated_ms = ? WHERE channel = ?",
            (_seal_key(owner, channel, key), previous, int(time.time() * 1000), str(channel)),
        )
    finally:
        db.close()
    return key, previous


def _seal_seed(client: VeilClient, channel: Account) -> bytes:
    nonce = os.urandom(crypto.XNONCE_BYTES)
    ad = channel.id.x25519_public
    return nonce + crypto.aead_seal(_seed_key(client), nonce, channel.seed, ad)


def _owned(where: VeilClient | Home, name_or_id: str) -> tuple[str, AccountId, bytes]:
    db = _db(where)
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


def open_channel(client: VeilClient, name_or_id: str) -> Channel:
    """A channel this home owns, by name or ID (its seed unsealed with the account's)."""
    name, channel, sealed = _owned(client, name_or_id)
    nonce, box = sealed[: crypto.XNONCE_BYTES], sealed[crypto.XNONCE_BYTES :]
    try:
        seed = crypto.aead_open(_seed_key(client), nonce, box, channel.x25519_public)
    except IntegrityError:
        raise StateError(f"channel {name!r}: its seed does not open with this account") from None
    account = Account(seed)
    if account.id != channel:
        raise StateError(f"channel {name!r}: its seed is not the channel's")
    row = _private_row(client, channel)
    if row is None:
        return Channel(client, account, name=name)
    key = _open_key(_owner_account(client, None), channel, row[0])
    return Channel(client, account, name=name, key=key, previous=row[1])


def channel_invite(
    where: VeilClient | Home, name_or_id: str, *, account: Account | None = None
) -> str:
    """The link of a channel this home owns (no network): a public channel's needs no
    seed; a private channel's carries its current key, unsealed with the home
    account's seed (``account``, or the client's)."""
    _, channel, _ = _owned(where, name_or_id)
    row = _private_row(where, channel)
    if row is None:
        return format_channel_invite(channel)
    key = _open_key(_owner_account(where, account), channel, row[0])
    return format_channel_invite(channel, key)


def list_channels(client: VeilClient | Home) -> list[ChannelInfo]:
    """The channels this home owns, then those it follows (no network)."""
    db = _db(client)
    try:
        owned = db.execute(
            "SELECT o.channel, o.name, p.channel IS NOT NULL FROM owned o "
            "LEFT JOIN private p ON p.channel = o.channel ORDER BY o.created_ms"
        ).fetchall()
        followed = db.execute(
            "SELECT channel, taken, dropped, locked, epoch IS NOT NULL FROM following "
            "ORDER BY channel"
        ).fetchall()
    finally:
        db.close()
    out = [ChannelInfo(AccountId.parse(c), n, True, private=bool(p)) for c, n, p in owned]
    out += [
        ChannelInfo(AccountId.parse(c), None, False, t, d, private=bool(p), locked=x)
        for c, t, d, x, p in followed
    ]
    return out


def _target(channel: AccountId | str | ChannelInvite) -> tuple[AccountId, bytes | None]:
    """The channel to follow and the key its invite carries (None: none)."""
    if isinstance(channel, AccountId):
        return channel, None
    if isinstance(channel, ChannelInvite):
        invite = channel
    elif isinstance(channel, str) and channel.startswith("veil://"):
        invite = parse_channel_invite(channel)
    else:
        try:
            return AccountId.parse(channel), None
        except InvalidId as exc:
            raise InvalidArgument(f"not a channel ID or invite: {exc}") from None
    return invite.channel, invite.key


#: What :func:`follow` says once (``on_notice(kind, text)``) about posts it cannot open.
NOTICES: Final = {
    "no_key": "this channel is private: its posts need an invite link with its key "
    "(veil://channel/<id>#<key>); they are counted, not shown",
    "revoked": "the invite was revoked: newer posts are under a key it does not hold; "
    "ask the channel for its new invite (the posts made before stay readable)",
    "other_key": "some posts are under a key this invite does not hold (older than the "
    "invite, or the invite was revoked); they are counted, not shown",
}

Notice = Callable[[str, str], None]


class Follower:
    """One channel followed: its own paths, position and counts (see the module note)."""

    def __init__(
        self,
        client: VeilClient,
        channel: AccountId,
        *,
        since: int | None = None,
        key: bytes | None = None,
        on_notice: Notice | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.since = since
        self.key = key
        self.epoch = None if key is None else epoch_id(key, channel)
        self.on_notice = on_notice
        self._noticed: set[str] = set()
        #: Private posts signed by the channel that this follower cannot open.
        self.locked = 0
        #: True once a post shows the invite was revoked.
        self.revoked = False
        self.rng = random.SystemRandom()
        self.paths = PathSelector(
            client.state, policy=client.config.paths, rng=self.rng, now_ms=client.clock.local
        )
        self.onion: OnionClient | None = None
        self.dropped = 0
        self.taken = 0
        self._node: bytes | None = None
        self._synced: bytes | None = None
        self.last_error: str | None = None
        self.db = _db(client)
        self.db.execute("INSERT OR IGNORE INTO following (channel) VALUES (?)", (str(channel),))
        self._set_epoch()
        self.dropped, self.taken, self.locked, self._epoch_ts, revoked = self.db.execute(
            "SELECT dropped, taken, locked, epoch_ts, revoked FROM following WHERE channel = ?",
            (str(channel),),
        ).fetchone()
        self._pending_revoked = bool(revoked)

    def _set_epoch(self) -> None:
        """Following with another key than last time (or none): the posts that did not
        open are read again, by dropping their hashes and the position."""
        ch = str(self.channel)
        (stored,) = self.db.execute(
            "SELECT epoch FROM following WHERE channel = ?", (ch,)
        ).fetchone()
        same = (stored is None and self.epoch is None) or (
            stored is not None and self.epoch is not None and crypto.ct_equal(stored, self.epoch)
        )
        if same:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            gone = self.db.execute(
                "DELETE FROM taken WHERE channel = ? AND locked = 1", (ch,)
            ).rowcount
            self.db.execute(
                "UPDATE following SET epoch = ?, epoch_ts = NULL, revoked = 0, locked = 0 "
                "WHERE channel = ?",
                (self.epoch, ch),
            )
            if gone:
                self.db.execute("UPDATE following SET last_hash = NULL WHERE channel = ?", (ch,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _notice(self, kind: str) -> None:
        if kind in self._noticed:
            return
        self._noticed.add(kind)
        if kind == "revoked":
            self.revoked = True
            self.db.execute(
                "UPDATE following SET revoked = 1 WHERE channel = ?", (str(self.channel),)
            )
        if self.on_notice is not None:
            self.on_notice(kind, NOTICES[kind])

    def _locked(self, exc: PostLocked) -> None:
        """Say, once per kind, why a post the channel signed does not open."""
        if self.epoch is None:
            self._notice("no_key")
            return
        after = (
            self._epoch_ts is not None
            and exc.timestamp_ms is not None
            and exc.timestamp_ms > self._epoch_ts
        )
        named = exc.previous is not None and crypto.ct_equal(exc.previous, self.epoch)
        self._notice("revoked" if after or named else "other_key")

    def _opened(self, post: Post) -> None:
        """A private post opened with this key: its time bounds the epoch's use."""
        if post.epoch is None or (
            self._epoch_ts is not None and post.timestamp_ms <= self._epoch_ts
        ):
            return
        self._epoch_ts = post.timestamp_ms
        self.db.execute(
            "UPDATE following SET epoch_ts = ? WHERE channel = ?",
            (post.timestamp_ms, str(self.channel)),
        )

    async def _onion(self) -> OnionClient:
        if self.onion is None:
            from veil.client.onion_client import OnionClient

            await self.paths.load()
            self.paths.set_consensus(self.client.consensus)
            self.client.directory.on_change(self.paths.set_consensus)
            self.onion = OnionClient(
                self.client.transport,
                self.paths,
                self.client.clock,
                policy=self.client.config.requests,
            )
        return self.onion

    def _position(self) -> bytes | None:
        row = self.db.execute(
            "SELECT last_hash FROM following WHERE channel = ?", (str(self.channel),)
        ).fetchone()
        return row[0] if row else None

    def _held(self, message_hash: bytes) -> bool:
        return (
            self.db.execute(
                "SELECT 1 FROM taken WHERE channel = ? AND hash = ?",
                (str(self.channel), message_hash),
            ).fetchone()
            is not None
        )

    def _record(self, message_hash: bytes, *, shown: bool, locked: bool = False) -> None:
        """Record a message taken (shown, dropped or locked) and move the position past
        it, in one transaction."""
        ch = str(self.channel)
        dropped = not shown and not locked
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT OR IGNORE INTO taken (channel, hash, locked) VALUES (?, ?, ?)",
                (ch, message_hash, int(locked)),
            )
            self.db.execute(
                "UPDATE following SET last_hash = ?, taken = taken + ?, dropped = dropped + ?, "
                "locked = locked + ? WHERE channel = ?",
                (message_hash, int(shown), int(dropped), int(locked), ch),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    async def _retrieve(self, wait_s: int) -> rpc.RetrieveResult:
        onion = await self._onion()
        last = self._position() if self._synced else None
        channel = self.channel

        def build(now_ms: int) -> bytes:
            return rpc.make_retrieve(
                channel, now_ms=now_ms, namespace=CHANNEL_NAMESPACE, last_hash=last, wait_s=wait_s
            )

        timeout = max(wait_s + 20.0, 45.0) if wait_s else None
        try:
            answer = await onion.call(
                build,
                account=channel,
                prefer=self._synced or self._node,
                timeout_s=timeout,
                deadline_s=timeout,
            )
            assert answer.reply.result is not None
            result = rpc.RetrieveResult.from_wire(answer.reply.result)
        except BaseException:
            self._node = None
            raise
        node = answer.node.node_id
        self._node = node
        if last is None:
            self._synced = node
        elif node != self._synced:
            self._synced = None
        return result

    async def posts(self) -> AsyncIterator[Post]:
        """Verified posts as they come, each recorded before it is yielded; forever."""
        if self._pending_revoked:  # found by an earlier follow with this key
            self._notice("revoked")
        await trio.sleep(self.rng.uniform(0, 2.0))  # channels' polls do not start together
        failures = 0
        wait_s = 0
        try:
            while True:
                try:
                    result = await self._retrieve(wait_s)
                except (NetworkError, ProtocolError) as exc:
                    self.last_error = str(exc)
                    failures += 1
                    await trio.sleep(
                        min(MAX_BACKOFF_S, 0.5 * 2**failures) * self.rng.uniform(0.5, 1)
                    )
                    continue
                failures = 0
                for message in result.messages:
                    if self._held(message.hash):
                        continue
                    try:
                        post = verify_post(
                            message.data,
                            channel=self.channel,
                            now_ms=self.client.clock.now(),
                            key=self.key,
                        )
                    except PostLocked as exc:
                        self._record(message.hash, shown=False, locked=True)
                        self.locked += 1
                        self._locked(exc)
                        continue
                    except ChannelError:
                        self._record(message.hash, shown=False)
                        self.dropped += 1
                        continue
                    self._record(message.hash, shown=True)
                    self._opened(post)
                    if self.since is not None and post.timestamp_ms < self.since:
                        continue
                    self.taken += 1
                    yield post
                if result.messages and self._position() != result.messages[-1].hash:
                    self.db.execute(
                        "UPDATE following SET last_hash = ? WHERE channel = ?",
                        (result.messages[-1].hash, str(self.channel)),
                    )
                wait_s = 0 if result.more else self.rng.randint(*WAIT_RANGE_S)
        finally:
            self.db.close()
            if self.onion is not None:  # stop following the consensus for this channel
                listeners = getattr(self.client.directory, "_listeners", [])
                with contextlib.suppress(ValueError):
                    listeners.remove(self.paths.set_consensus)


def follow(
    client: VeilClient,
    channel: AccountId | str | ChannelInvite,
    *,
    since: int | None = None,
    on_notice: Notice | None = None,
) -> AsyncIterator[Post]:
    """Verified posts of ``channel`` (an ID, or a ``veil://channel/...`` link, with a
    private channel's key after ``#``), resuming where this home stopped; ``since``
    (ms, the posts' time) skips older posts; ``on_notice(kind, text)`` is told once per
    kind of post that does not open (:data:`NOTICES`). See the module note.
    ``async for post in follow(client, invite): ...``"""
    ident, key = _target(channel)
    return Follower(client, ident, since=since, key=key, on_notice=on_notice).posts()
