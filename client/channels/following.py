"""Following a channel: verified posts, exactly once across restarts, with no identity.

Design note
-----------
:func:`follow` reads the channel's namespace with a
:class:`~veil.client.channels.polling.PublicPoller` (unsigned long-polls on paths and
timing of its own: see that module for what a node can tell). Every post is checked
with :func:`~veil.onion.channel.verify_post` against the channel it was read from; one
that does not verify is dropped and counted (:attr:`Follower.dropped`), never shown.
For each post, its hash is recorded and the position moved past it in one transaction
(``HOME/channels.sqlite``, :mod:`veil.client.channels.store`), *then* it is yielded.
``since`` (ms) skips posts dated before it.

A follower with a key (``veil://channel/<id>#<key>``) reads the posts of that key's
epoch. A post it cannot open (no key, or another epoch's) is signed by the channel, so
it is neither shown nor a forgery: it is counted apart (:attr:`Follower.locked`) and
said once through ``on_notice``: ``"no_key"``, ``"revoked"`` (the post is dated after a
post this key opened, or names this key's epoch as the one before it: the invite was
revoked), or ``"other_key"`` (older than the invite, or the invite was revoked more
than once and nothing older is left). The key is not stored: following again with
another invite re-reads the posts it could not open.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Final

from veil.client.channels.polling import PublicPoller
from veil.client.channels.store import open_db, transaction
from veil.client.errors import InvalidArgument
from veil.client.paths import PathSelector
from veil.onion import crypto
from veil.onion.channel import (
    CHANNEL_NAMESPACE,
    ChannelInvite,
    Post,
    epoch_id,
    parse_channel_invite,
    verify_post,
)
from veil.onion.errors import ChannelError, InvalidId, PostLocked
from veil.onion.keys import AccountId

if TYPE_CHECKING:
    from veil.client.onion_client import OnionClient
    from veil.client.veil_client import VeilClient

__all__ = ["NOTICES", "Follower", "Notice", "follow"]

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
    """One channel followed: its own poller (paths, timing), position and counts."""

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
        self.poller = PublicPoller(client, channel, CHANNEL_NAMESPACE)
        self.dropped = 0
        self.taken = 0
        self.db = open_db(client)
        self.db.execute("INSERT OR IGNORE INTO following (channel) VALUES (?)", (str(channel),))
        self._set_epoch()
        self.dropped, self.taken, self.locked, self._epoch_ts, revoked = self.db.execute(
            "SELECT dropped, taken, locked, epoch_ts, revoked FROM following WHERE channel = ?",
            (str(channel),),
        ).fetchone()
        self._pending_revoked = bool(revoked)

    # The poller's parts, as before it was shared with rooms.
    @property
    def rng(self) -> random.Random:
        return self.poller.rng

    @property
    def paths(self) -> PathSelector:
        return self.poller.paths

    @property
    def onion(self) -> OnionClient | None:
        return self.poller.onion

    @property
    def last_error(self) -> str | None:
        return self.poller.last_error

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
        with transaction(self.db):
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

    # --- the position (polling.Position) ---------------------------------------------

    def position(self) -> bytes | None:
        row = self.db.execute(
            "SELECT last_hash FROM following WHERE channel = ?", (str(self.channel),)
        ).fetchone()
        return row[0] if row else None

    def held(self, message_hash: bytes) -> bool:
        return (
            self.db.execute(
                "SELECT 1 FROM taken WHERE channel = ? AND hash = ?",
                (str(self.channel), message_hash),
            ).fetchone()
            is not None
        )

    def move_to(self, message_hash: bytes) -> None:
        self.db.execute(
            "UPDATE following SET last_hash = ? WHERE channel = ?",
            (message_hash, str(self.channel)),
        )

    def _record(self, message_hash: bytes, *, shown: bool, locked: bool = False) -> None:
        """Record a message taken (shown, dropped or locked) and move the position past
        it, in one transaction."""
        ch = str(self.channel)
        dropped = not shown and not locked
        with transaction(self.db):
            self.db.execute(
                "INSERT OR IGNORE INTO taken (channel, hash, locked) VALUES (?, ?, ?)",
                (ch, message_hash, int(locked)),
            )
            self.db.execute(
                "UPDATE following SET last_hash = ?, taken = taken + ?, dropped = dropped + ?, "
                "locked = locked + ? WHERE channel = ?",
                (message_hash, int(shown), int(dropped), int(locked), ch),
            )

    async def posts(self) -> AsyncIterator[Post]:
        """Verified posts as they come, each recorded before it is yielded; forever."""
        if self._pending_revoked:  # found by an earlier follow with this key
            self._notice("revoked")
        try:
            async with aclosing(self.poller.messages(self)) as messages:
                async for message in messages:
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
        finally:
            self.db.close()
            self.poller.close()


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
