"""The :class:`VeilClient` object: what a client does, each job delegated to the module
that does it (see the package's design note, :mod:`veil.client.veil_client`)."""

from __future__ import annotations

import contextlib
import datetime
import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import trio

from veil.client.consensus import Directory
from veil.client.delegation.issued import RevocationTarget, record_issued
from veil.client.delegation.session import (
    DEFAULT_EXPIRES_IN_S,
    DelegatedSession,
    ResourceLike,
    authorize,
)
from veil.client.errors import InvalidArgument, SeedRequired
from veil.client.home import Home
from veil.client.messaging import (
    DEFAULT_TTL_S,
    InboxMessage,
    Receiver,
    Sent,
    send_message,
)
from veil.client.network_clock import NetworkClock
from veil.client.onion_client import Answer, OnionClient
from veil.client.paths import PathSelector
from veil.client.sessions import HomeCacheStore, NetworkBackend, SessionManager, make_cache
from veil.client.sessions.files import DecryptedFile
from veil.client.sessions.session import EncryptionSession, RecipientsLike
from veil.client.state import ClientState
from veil.client.transport import Transport
from veil.client.veil_client.config import ClientConfig
from veil.client.veil_client.revoking import Revoked, revoke_links
from veil.client.veil_client.status import client_status
from veil.onion import rpc
from veil.onion.capability import DelegatedSigner
from veil.onion.directory import Consensus, NetworkFile
from veil.onion.errors import InvalidTtl, VeilError
from veil.onion.keys import Account, AccountId, GroupId
from veil.onion.packet import Hop

__all__ = ["VeilClient"]

#: Seconds between two passes of the failure-count janitor.
_MAINTENANCE_INTERVAL_S = 60.0


class VeilClient:
    """A running client; make one with :func:`open_client`. Methods are for the trio
    thread that opened it.

    ``account`` is the account's key, or None for a client acting under a delegated
    session (``delegated``)."""

    def __init__(
        self,
        *,
        account: Account | None,
        home: Home,
        network: NetworkFile,
        state: ClientState,
        transport: Transport,
        clock: NetworkClock,
        config: ClientConfig,
        rng: random.Random,
        delegated: DelegatedSession | None = None,
    ) -> None:
        if (account is None) == (delegated is None):
            raise InvalidArgument("a client acts with an account or a delegated session")
        self.account = account
        self.delegated = delegated
        self.home = home
        self.network = network
        self.state = state
        self.transport = transport
        self.clock = clock
        self.config = config
        self.paths = PathSelector(state, policy=config.paths, rng=rng, now_ms=clock.local)
        # The consensus comes from our guards once we hold one (not from the authorities,
        # who would otherwise see every client: client/consensus.py).
        self.directory = Directory(
            network,
            state,
            transport,
            clock,
            policy=config.directory,
            rng=rng,
            guards=self.paths.ensure_guards,
            guard_ids=lambda: [g.node_id for g in self.paths.guards],
        )
        self.directory.on_change(self.paths.set_consensus)
        self._watchers: list[Callable[[Consensus], None]] = []
        self.directory.on_change(self._consensus_changed)
        self.onion = OnionClient(
            transport,
            self.paths,
            clock,
            policy=config.requests,
            on_clock=self._save_clock,
            on_wrong_swarm=self.directory.request_refresh,
        )
        me: Account | DelegatedSession = account if account is not None else delegated  # type: ignore[assignment]
        self.receiver = Receiver(self.onion, me, state, wait_s=config.wait_s)
        self._sessions: SessionManager | None = None
        if account is not None:
            self._sessions = _session_manager(self, account)

    @property
    def account_id(self) -> AccountId:
        """The account this client acts for (its own, or the delegated session's)."""
        if self.account is not None:
            return self.account.id
        assert self.delegated is not None
        return self.delegated.account

    @property
    def consensus(self) -> Consensus:
        """The consensus in use (refreshed in the background)."""
        consensus = self.directory.current
        assert consensus is not None, "an open client always has a consensus"
        return consensus

    # --- messaging -------------------------------------------------------------------------

    async def send(
        self, to: AccountId | str, content: bytes | str, *, ttl_s: float = DEFAULT_TTL_S
    ) -> Sent:
        """Send ``content`` (bytes, or text sent as UTF-8) to the account ``to``, kept
        in its inbox for ``ttl_s`` seconds (10 s to 14 days).

        Raises :class:`~veil.onion.errors.InvalidId` for a bad account ID,
        :class:`~veil.client.messaging.MessageTooLarge`,
        :class:`~veil.onion.errors.InvalidTtl` for a TTL out of limits (all before
        anything is sent), and :class:`~veil.client.errors.OnionRequestFailed` if no node
        took it. Safe to call again after a failure: see :mod:`veil.client.messaging`.
        """
        recipient = to if isinstance(to, AccountId) else AccountId.parse(to)
        account = self.require_seed("sending a message (the envelope is signed by the account)")
        return await send_message(self.onion, account, recipient, content, ttl_s=ttl_s)

    def messages(self) -> AsyncIterator[InboxMessage]:
        """New messages as they arrive, each recorded in the state before it is yielded:
        a restarted client neither loses nor repeats one (see :mod:`veil.client.messaging`
        for the exact promise). ``async for`` over it; it does not end by itself."""
        return self.receiver.messages()

    async def fetch(self) -> list[InboxMessage]:
        """The messages waiting now (no waiting), recorded, in arrival order."""
        return await self.receiver.fetch()

    def inbox(self, *, after_seq: int = 0, limit: int = 100) -> list[InboxMessage]:
        """Messages this client has recorded (whether or not a caller saw them), oldest
        first, with ``seq`` above ``after_seq``; at most ``limit``. No network."""
        return self.receiver.recorded(after_seq=after_seq, limit=limit)

    # --- encryption sessions (veil.client.sessions) -----------------------------------------

    @property
    def sessions(self) -> SessionManager:
        """This account's encryption sessions (needs the seed: members unwrap keys)."""
        if self._sessions is None:
            raise SeedRequired("encryption sessions need the account's seed")
        return self._sessions

    async def create_encryption_session(
        self,
        recipients: RecipientsLike = (),
        *,
        metadata: str | None = None,
        encrypt_for_self: bool = True,
        policy: str = "rights",
        rights: Iterable[str] | None = None,
    ) -> EncryptionSession:
        """A new encryption session (Seald's ``createEncryptionSession``): see
        :meth:`veil.client.sessions.SessionManager.create_encryption_session`."""
        return await self.sessions.create_encryption_session(
            recipients,
            metadata=metadata,
            encrypt_for_self=encrypt_for_self,
            policy=policy,
            rights=rights,
        )

    async def retrieve_encryption_session(
        self,
        session_id: GroupId | str | None = None,
        *,
        encrypted_message: str | bytes | None = None,
        use_cache: bool = True,
    ) -> EncryptionSession:
        """A session by its ID or from one of its (JSON) messages."""
        return await self.sessions.retrieve_encryption_session(
            session_id, encrypted_message=encrypted_message, use_cache=use_cache
        )

    async def decrypt_file(
        self, data: Any, out: Any = None, *, use_cache: bool = True, progress: Any = None
    ) -> DecryptedFile:
        """Decrypt a file of any session this account reads (found from its header)."""
        return await self.sessions.decrypt_file(data, out, use_cache=use_cache, progress=progress)

    async def decrypt_message(self, message: str | bytes, *, use_cache: bool = True) -> str:
        """Decrypt a (JSON) message of any session this account reads."""
        return await self.sessions.decrypt_message(message, use_cache=use_cache)

    async def clean_cache(self) -> int:
        """Drop the expired entries of the sessions' cache now; how many."""
        return await self.sessions.clean_cache()

    # --- the account's namespaces: signed requests ---------------------------------------

    async def retrieve(
        self,
        namespace: int = rpc.INBOX,
        *,
        last_hash: bytes | None = None,
        limit: int | None = None,
    ) -> rpc.RetrieveResult:
        """One page of the account's messages in ``namespace`` after ``last_hash`` (raw:
        not opened, not recorded; :meth:`fetch` and :meth:`messages` do that for the
        inbox). Signed; a public-read namespace (< 0), which anyone may read, is read
        unsigned by a delegated session that does not hold ``retrieve`` there."""
        signer: Account | DelegatedSigner | AccountId
        if (
            self.delegated is not None
            and not rpc.read_needs_auth(namespace)
            and self.delegated.allows("retrieve", namespace) is not None
        ):
            signer = self.account_id
        else:
            signer = self.signer("retrieve", namespace)

        def build(now_ms: int) -> bytes:
            return rpc.make_retrieve(
                signer, now_ms=now_ms, namespace=namespace, last_hash=last_hash, limit=limit
            )

        reply = await self.call(build, account=self.account_id)
        assert reply.result is not None
        return rpc.RetrieveResult.from_wire(reply.result)

    async def store(
        self, data: bytes, *, namespace: int, ttl_s: float = DEFAULT_TTL_S
    ) -> rpc.StoreResult:
        """Store ``data`` in one of the account's own namespaces (``store`` for
        ``namespace >= 0``; a public-read one, ``< 0``, needs ``post``: :meth:`post`)."""
        if (
            isinstance(ttl_s, bool)
            or not isinstance(ttl_s, int | float)
            or not math.isfinite(ttl_s)
        ):
            raise InvalidTtl(f"a TTL is a finite number of seconds, not {ttl_s!r}")
        signer = self.signer("store", namespace)
        ttl_ms = round(ttl_s * 1000)
        rpc.check_ttl_ms(ttl_ms, namespace)  # InvalidTtl before anything is sent

        def build(now_ms: int) -> bytes:
            return rpc.make_store(signer, data, ttl_ms, now_ms=now_ms, namespace=namespace)

        reply = await self.call(build, account=self.account_id)
        assert reply.result is not None
        return rpc.StoreResult.from_wire(reply.result)

    async def post(
        self, data: bytes | str, *, namespace: int = -1, ttl_s: float = DEFAULT_TTL_S
    ) -> rpc.StoreResult:
        """Publish ``data`` (text as UTF-8) in a public-read namespace of the account
        (``namespace < 0``; action ``post``)."""
        if namespace >= 0:
            raise InvalidArgument("posting is into a public-read namespace (< 0)")
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return await self.store(raw, namespace=namespace, ttl_s=ttl_s)

    async def delete(
        self, hashes: Sequence[bytes], *, namespace: int = rpc.INBOX
    ) -> rpc.DeleteResult:
        """Delete these messages of the account in ``namespace`` (action ``delete``)."""
        signer = self.signer("delete", namespace)

        def build(now_ms: int) -> bytes:
            return rpc.make_delete(signer, list(hashes), now_ms=now_ms, namespace=namespace)

        reply = await self.call(build, account=self.account_id)
        assert reply.result is not None
        return rpc.DeleteResult.from_wire(reply.result)

    async def delete_all(self, *, namespace: int | None) -> rpc.DeleteAllResult:
        """Delete every message of the account in ``namespace`` (None: in every
        namespace, which a session must hold ``delete`` over all of)."""
        signer = self.signer("delete_all", namespace)

        def build(now_ms: int) -> bytes:
            return rpc.make_delete_all(signer, namespace=namespace, now_ms=now_ms)

        reply = await self.call(build, account=self.account_id)
        assert reply.result is not None
        return rpc.DeleteAllResult.from_wire(reply.result)

    async def expire(
        self, hashes: Sequence[bytes], expiry_ms: int, *, namespace: int = rpc.INBOX
    ) -> rpc.ExpireResult:
        """Change these messages' expiry to ``expiry_ms`` (action ``expire``)."""
        signer = self.signer("expire", namespace)

        def build(now_ms: int) -> bytes:
            return rpc.make_expire(
                signer, list(hashes), expiry_ms, now_ms=now_ms, namespace=namespace
            )

        reply = await self.call(build, account=self.account_id)
        assert reply.result is not None
        return rpc.ExpireResult.from_wire(reply.result)

    # --- delegated sessions ------------------------------------------------------------

    async def authorize(
        self,
        resources: ResourceLike | Iterable[ResourceLike],
        expires_in: float | datetime.timedelta = DEFAULT_EXPIRES_IN_S,
        *,
        statement: str | None = None,
    ) -> DelegatedSession:
        """A new session for a fresh key, authorized by this client's account on
        ``resources`` (``OWNER:NAMESPACES:ACTIONS`` texts or
        :class:`~veil.onion.capability.Resource`; ``self`` is this account) for
        ``expires_in`` seconds (default 7 days), dated by the network's clock and recorded
        in the home as issued. A delegated client re-delegates instead
        (:meth:`delegate`)."""
        account = self.require_seed(
            "authorizing a session (its first link is signed by the account)"
        )
        session = authorize(
            account, resources, expires_in, statement=statement, now_ms=self.clock.now()
        )
        await trio.to_thread.run_sync(record_issued, self.state, session)
        return session

    async def delegate(
        self,
        resources: ResourceLike | Iterable[ResourceLike],
        expires_in: float | datetime.timedelta | None = None,
        *,
        statement: str | None = None,
    ) -> DelegatedSession:
        """For a delegated client: a narrower session for a fresh key, issued by this
        client's session (:meth:`DelegatedSession.delegate`), recorded in the home as
        issued. A client with the seed authorizes instead (:meth:`authorize`)."""
        if self.delegated is None:
            return await self.authorize(
                resources,
                DEFAULT_EXPIRES_IN_S if expires_in is None else expires_in,
                statement=statement,
            )
        session = self.delegated.delegate(
            resources, expires_in, statement=statement, now_ms=self.clock.now()
        )
        await trio.to_thread.run_sync(record_issued, self.state, session)
        return session

    def require_seed(self, what: str) -> Account:
        """The account's key, for ``what`` needs it (sealing a message, a channel's or
        room's seed kept under it); :class:`~veil.client.errors.SeedRequired` for a
        client acting under a delegated session."""
        if self.account is None:
            raise SeedRequired(f"{what} needs the account's seed; a delegated session has none")
        return self.account

    def _session(self) -> DelegatedSession:
        assert self.delegated is not None
        return self.delegated

    def signer(self, method: str, namespace: int | None) -> Account | DelegatedSigner:
        """What signs a ``method`` request (or a record stored by one) in ``namespace``:
        the account, or the delegated session once it is checked (expiry by the network's
        clock, then the action: :class:`~veil.client.errors.NotAuthorized`; nothing is
        sent)."""
        if self.account is not None:
            return self.account
        session = self._session()
        session.require(method, namespace, now_ms=self.clock.now())
        return session.signer

    def watch_consensus(self, listener: Callable[[Consensus], None]) -> Callable[[], None]:
        """Call ``listener(consensus)`` whenever a newer consensus is installed (a
        follower's own path selector keeps up this way); the function returned stops
        it (calling it again does nothing)."""
        self._watchers.append(listener)

        def unwatch() -> None:
            with contextlib.suppress(ValueError):
                self._watchers.remove(listener)

        return unwatch

    def _consensus_changed(self, consensus: Consensus) -> None:
        for listener in list(self._watchers):
            listener(consensus)

    # --- lower level -------------------------------------------------------------------------

    async def call(
        self,
        build: Callable[[int], bytes],
        *,
        account: AccountId | GroupId | None = None,
        destination: Hop | None = None,
        timeout_s: float | None = None,
    ) -> rpc.Reply:
        """One storage RPC through an onion path (see :meth:`OnionClient.call`):
        ``build(now_ms)`` makes the request (signed with the network's time);
        ``timeout_s`` limits each try (default: the request policy's)."""
        answer = await self.onion.call(
            build, account=account, destination=destination, timeout_s=timeout_s
        )
        return answer.reply

    async def ping(self, node: bytes | None = None) -> Answer:
        """An ``info`` request to ``node`` (default: a random node) over a default path:
        the answer says which path and node, and the round trip."""
        consensus = self.consensus
        target = consensus.node(node) if node is not None else None
        if target is None:
            target = self.paths.rng.choice(consensus.nodes)
        return await self.onion.call(lambda _now: rpc.make_info(), destination=target.as_hop())

    async def refresh(self) -> Consensus:
        """Fetch the consensus now (the background task does it when due)."""
        return await self.directory.fetch()

    async def revoke(self, target: RevocationTarget) -> list[Revoked]:
        """Revoke before expiry what ``target`` names: a session's DID (every link
        issued to that key), a link's hash (hex; a unique prefix of 8 or more digits), or
        a :class:`DelegatedSession` (its own link); see
        :func:`~veil.client.veil_client.revoking.revoke_links`."""
        return await revoke_links(self, target)

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``veil status`` shows: the network, guards, paths and clock (JSON-able)."""
        return client_status(self)

    # --- internals ---------------------------------------------------------------------------

    async def _save_clock(self, offset_ms: int) -> None:
        await trio.to_thread.run_sync(self.state.set_clock_offset, offset_ms)

    async def _start(self) -> None:
        """Failure counts, then a consensus: cached, else fetched (calibrating the clock
        through it if our clock is too far off to verify it)."""
        await self.paths.load()
        if await self.directory.load_cached() is not None:
            return
        await self.directory.fetch(tentative_ok=True)
        if self.directory.tentative:
            await self.ping()  # any answer (or clock_skew refusal) gives us the time
            await self.directory.confirm()

    async def _maintain(self) -> None:
        while True:
            await trio.sleep(_MAINTENANCE_INTERVAL_S)
            with contextlib.suppress(VeilError):  # the state file is busy: next time
                await self.paths.forget_failures()


def _session_manager(client: VeilClient, account: Account) -> SessionManager:
    config = client.config
    cache = make_cache(
        config.encryption_session_cache_ttl,
        config.encryption_session_cache_cleanup_interval,
        config.encryption_session_cache,
        home=client.home.path,
        account=account,
    )
    return SessionManager(
        account,
        NetworkBackend(client),
        cache=cache,
        admin_keys=HomeCacheStore(client.home.path / "session-keys", account),
        chat_path=client.home.path / "group-chat.sqlite",
        clock_ms=client.clock.now,
    )
