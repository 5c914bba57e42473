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

Private channels (posts encrypted under an encryption session whose key travels in the
invite link) are not built here: they wait for the encryption-session client
(issue 13). An invite link with a key is refused by :func:`follow`.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator
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
    ChannelInvite,
    Post,
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
    ProtocolError,
)
from veil.onion.keys import Account, AccountId

if TYPE_CHECKING:
    from veil.client.onion_client import OnionClient
    from veil.client.veil_client import VeilClient

__all__ = [
    "DEFAULT_POST_TTL_S",
    "Channel",
    "ChannelInfo",
    "Follower",
    "channel_invite",
    "create_channel",
    "follow",
    "list_channels",
    "open_channel",
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
"""


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

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "name": self.name,
            "owned": self.owned,
            "invite": format_channel_invite(self.id),
            "taken": self.taken,
            "dropped": self.dropped,
        }


class Channel:
    """A channel to post to: its account (or a delegated key allowed to ``post``)."""

    def __init__(
        self, client: VeilClient, signer: Account | DelegatedSigner, *, name: str | None = None
    ) -> None:
        self.client = client
        self.signer = signer
        owner = signer.id if isinstance(signer, Account) else signer.owner
        if not isinstance(owner, AccountId):
            raise InvalidArgument("a channel is an account")
        self.id: AccountId = owner
        self.name = name

    @classmethod
    def delegated(cls, client: VeilClient, signer: DelegatedSigner) -> Channel:
        """A posting job's channel: a session key allowed to ``post`` (no seed)."""
        return cls(client, signer)

    @property
    def invite(self) -> str:
        """The channel's link, ``veil://channel/<id>`` (public: no key)."""
        return format_channel_invite(self.id)

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
        )
        signer = self.signer

        def build(now_ms: int) -> bytes:
            return rpc.make_store(
                signer, post.encoded, ttl_ms, now_ms=now_ms, namespace=CHANNEL_NAMESPACE
            )

        await self.client.call(build, account=self.id)
        return post


def create_channel(client: VeilClient, name: str) -> Channel:
    """A new channel (a fresh account) named ``name`` in this home."""
    if not isinstance(name, str) or not 1 <= len(name) <= _MAX_NAME or not name.isprintable():
        raise InvalidArgument(f"a channel's name is 1 to {_MAX_NAME} printable characters")
    account = Account.generate()
    db = _db(client)
    try:
        db.execute(
            "INSERT INTO owned (channel, name, seed, created_ms) VALUES (?, ?, ?, ?)",
            (str(account.id), name, _seal_seed(client, account), int(time.time() * 1000)),
        )
    except sqlite3.IntegrityError:
        raise InvalidArgument(f"this home has a channel named {name!r} already") from None
    finally:
        db.close()
    return Channel(client, account, name=name)


_SEED_PURPOSE: Final = b"veil/chan-seed"


def _seed_key(client: VeilClient) -> bytes:
    owner = client._seed("a channel's seed (kept sealed under the home account's key)")
    return crypto.kdf(owner.seed, _SEED_PURPOSE)


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
    return Channel(client, account, name=name)


def channel_invite(where: VeilClient | Home, name_or_id: str) -> str:
    """The link of a channel this home owns (no network, no seed)."""
    return format_channel_invite(_owned(where, name_or_id)[1])


def list_channels(client: VeilClient | Home) -> list[ChannelInfo]:
    """The channels this home owns, then those it follows (no network)."""
    db = _db(client)
    try:
        owned = db.execute("SELECT channel, name FROM owned ORDER BY created_ms").fetchall()
        followed = db.execute(
            "SELECT channel, taken, dropped FROM following ORDER BY channel"
        ).fetchall()
    finally:
        db.close()
    out = [ChannelInfo(AccountId.parse(c), n, True) for c, n in owned]
    out += [ChannelInfo(AccountId.parse(c), None, False, t, d) for c, t, d in followed]
    return out


def _channel_id(channel: AccountId | str | ChannelInvite) -> AccountId:
    if isinstance(channel, AccountId):
        return channel
    if isinstance(channel, ChannelInvite):
        invite = channel
    elif isinstance(channel, str) and channel.startswith("veil://"):
        invite = parse_channel_invite(channel)
    else:
        try:
            return AccountId.parse(channel)
        except InvalidId as exc:
            raise InvalidArgument(f"not a channel ID or invite: {exc}") from None
    if invite.key is not None:
        raise InvalidArgument("private channels (invites with a key) are not supported yet")
    return invite.channel


class Follower:
    """One channel followed: its own paths, position and counts (see the module note)."""

    def __init__(self, client: VeilClient, channel: AccountId, *, since: int | None = None) -> None:
        self.client = client
        self.channel = channel
        self.since = since
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
        self.dropped, self.taken = self.db.execute(
            "SELECT dropped, taken FROM following WHERE channel = ?", (str(channel),)
        ).fetchone()

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

    def _record(self, message_hash: bytes, *, shown: bool) -> None:
        """Record a message taken (shown or dropped) and move the position past it, in
        one transaction."""
        ch = str(self.channel)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT OR IGNORE INTO taken (channel, hash) VALUES (?, ?)", (ch, message_hash)
            )
            self.db.execute(
                "UPDATE following SET last_hash = ?, taken = taken + ?, dropped = dropped + ? "
                "WHERE channel = ?",
                (message_hash, 1 if shown else 0, 0 if shown else 1, ch),
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
                            message.data, channel=self.channel, now_ms=self.client.clock.now()
                        )
                    except ChannelError:
                        self._record(message.hash, shown=False)
                        self.dropped += 1
                        continue
                    self._record(message.hash, shown=True)
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
) -> AsyncIterator[Post]:
    """Verified posts of ``channel`` (an ID, or a ``veil://channel/...`` link), resuming
    where this home stopped; ``since`` (ms, the posts' time) skips older posts. See the
    module note. ``async for post in follow(client, channel_id): ...``"""
    return Follower(client, _channel_id(channel), since=since).posts()
