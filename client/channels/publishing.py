"""Publishing a channel: create one (a fresh account kept in this home), open it, post.

Design note
-----------
A channel is an account whose public-read namespace
(:data:`~veil.onion.channel.CHANNEL_NAMESPACE`) holds its posts
(:mod:`veil.onion.channel.posts`). :meth:`Channel.post` signs the post (with the
channel's key, or with a delegated key allowed to ``post``: a posting job that holds no
seed, :meth:`Channel.delegated`) and stores it with a store request signed by the same
key, through an onion path, at a node of the channel's swarm. A private channel's post
is encrypted under its current epoch key first (:mod:`veil.client.channels.keys`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING, Final

from veil.client.channels.keys import (
    open_key,
    open_seed,
    owned,
    owner_account,
    private_row,
    seal_key,
    seal_seed,
)
from veil.client.channels.keys import revoke_invite as _revoke_invite
from veil.client.channels.store import open_db, transaction
from veil.client.errors import InvalidArgument
from veil.onion import rpc
from veil.onion.capability import DelegatedSigner
from veil.onion.channel import (
    CHANNEL_NAMESPACE,
    DEFAULT_PRIORITY,
    EPOCH_KEY_BYTES,
    Post,
    format_channel_invite,
    make_post,
    parse_channel_invite,
)
from veil.onion.keys import Account, AccountId

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = ["DEFAULT_POST_TTL_S", "Channel", "create_channel", "open_channel"]

DEFAULT_POST_TTL_S: Final = 7 * 86400
_MAX_NAME: Final = 64


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
        self.key, self.previous = _revoke_invite(self.client, str(self.id))
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
    posts encrypted under a key that travels in its invite (see
    :mod:`veil.client.channels.keys`)."""
    if not isinstance(name, str) or not 1 <= len(name) <= _MAX_NAME or not name.isprintable():
        raise InvalidArgument(f"a channel's name is 1 to {_MAX_NAME} printable characters")
    account = Account.generate()
    key = os.urandom(EPOCH_KEY_BYTES) if private else None
    owner = client.require_seed("a channel's seed (kept sealed under the home account's key)")
    now = int(time.time() * 1000)
    db = open_db(client)
    try:
        with transaction(db):
            db.execute(
                "INSERT INTO owned (channel, name, seed, created_ms) VALUES (?, ?, ?, ?)",
                (str(account.id), name, seal_seed(client, account), now),
            )
            if key is not None:
                db.execute(
                    "INSERT INTO private (channel, key, previous, rotated_ms) "
                    "VALUES (?, ?, NULL, ?)",
                    (str(account.id), seal_key(owner, account.id, key), now),
                )
    except sqlite3.IntegrityError:
        raise InvalidArgument(f"this home has a channel named {name!r} already") from None
    finally:
        db.close()
    return Channel(client, account, name=name, key=key)


def open_channel(client: VeilClient, name_or_id: str) -> Channel:
    """A channel this home owns, by name or ID (its seed unsealed with the account's)."""
    name, channel, sealed = owned(client, name_or_id)
    account = open_seed(client, name, channel, sealed)
    row = private_row(client, channel)
    if row is None:
        return Channel(client, account, name=name)
    key = open_key(owner_account(client, None), channel, row[0])
    return Channel(client, account, name=name, key=key, previous=row[1])
