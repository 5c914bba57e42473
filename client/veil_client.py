"""The veil client library: :func:`open_client` gives a :class:`VeilClient`.

Design note
-----------
One object, like httpx's ``AsyncClient``, that owns everything a client needs and
closes it in order::

    async with open_client(home, "devnet/network.json") as client:
        await client.send("05ab...", "hello", ttl_s=3600)
        async for message in client.messages():
            print(message.sender, message.text)

What it owns: the state file (:mod:`veil.client.state`), the HTTP transport to guards
and authorities (:mod:`veil.client.transport`, pluggable: any
:class:`~veil.client.transport.Transport`), the consensus (:mod:`veil.client.consensus`),
guards and paths (:mod:`veil.client.paths`), the network's clock
(:mod:`veil.client.network_clock`), onion requests (:mod:`veil.client.onion_client`), and
messaging (:mod:`veil.client.messaging`). And a nursery,
for the background work that keeps it usable: the consensus refresh and forgetting
old failure counts.

Opening (:func:`open_client`): open the state; load the identity (unless an account is
given); read the network file; install the cached consensus if it still verifies, else
fetch one: from the guards kept from the last run if the cache expired less than a day
ago, else from the authorities (with a usable consensus, refreshes go to the client's
guards too: :mod:`veil.client.consensus`). A client whose clock is far off accepts
the fetched consensus tentatively, asks a node for the time through it, then verifies it
again on the corrected clock (see :mod:`veil.client.consensus`); the offset is kept in
the state, so the next start needs no such step.

Structured concurrency: the background tasks run in a nursery that the ``async with``
block encloses; leaving the block cancels them, closes the transport, then the state
file. An exception raised in the block comes out of it as itself (not wrapped in an
exception group: the background tasks never raise, so it is the only one). If the block
is cancelled, so are requests in flight; the state file is left consistent.

Delegated sessions (:mod:`veil.client.delegation`): ``open_client(home, network,
delegated=session)`` gives a client that acts for ``session.account`` without its
seed. Each signed request is checked against the session before it is built
(:meth:`VeilClient.signer`): expired by the network's clock
(:class:`~veil.client.errors.SessionExpired`) or not granted
(:class:`~veil.client.errors.NotAuthorized`, naming the missing action), and nothing
leaves. What needs the seed itself (sending a message: the envelope is signed by the
account; opening one; authorizing a first link) raises
:class:`~veil.client.errors.SeedRequired`. Its inbox messages come out sealed (see
:mod:`veil.client.messaging`). A client with the seed issues sessions
(:meth:`VeilClient.authorize`), and one with either revokes what it issued
(:meth:`VeilClient.revoke`): the revocation record goes to every member of the owner's
swarm that answers, and the issue is recorded in the home (``veil id delegations``).

Errors while opening: :class:`~veil.client.errors.HomeError` (no identity, wrong
passphrase, state file problems), :class:`~veil.onion.errors.NetworkFileError` (missing
or invalid network file), :class:`~veil.client.errors.AuthorityUnreachable` (no consensus
could be fetched), a :class:`~veil.onion.errors.ConsensusError` (none verified).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from veil.client.consensus import Directory, DirectoryPolicy
from veil.client.delegation.issued import RevocationTarget, find, record_issued
from veil.client.delegation.session import (
    DEFAULT_EXPIRES_IN_S,
    DelegatedSession,
    ResourceLike,
    authorize,
)
from veil.client.errors import InvalidArgument, NotRevocable, SeedRequired, UnknownDelegation
from veil.client.files import read_network_file
from veil.client.home import Home
from veil.client.messaging import (
    DEFAULT_TTL_S,
    DEFAULT_WAIT_S,
    InboxMessage,
    Receiver,
    Sent,
    send_message,
)
from veil.client.network_clock import LocalClock, NetworkClock, local_clock_ms
from veil.client.onion_client import Answer, OnionClient, RequestPolicy
from veil.client.paths import PathPolicy, PathSelector
from veil.client.sessions import HomeCacheStore, NetworkBackend, SessionManager, make_cache
from veil.client.sessions.files import DecryptedFile
from veil.client.sessions.session import EncryptionSession, RecipientsLike
from veil.client.state import ClientState, open_state
from veil.client.transport import HttpxTransport, Transport, TransportConfig
from veil.onion import rpc
from veil.onion.capability import Chain, DelegatedSigner, SessionKey
from veil.onion.capability import revoke as sign_revocation
from veil.onion.directory import Consensus, NetworkFile
from veil.onion.errors import InvalidTtl, NetworkError, VeilError
from veil.onion.keys import Account, AccountId, GroupId
from veil.onion.packet import Hop

__all__ = ["ClientConfig", "Revoked", "VeilClient", "open_client"]

#: Seconds between two passes of the failure-count janitor.
_MAINTENANCE_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Every knob of the client, with the defaults DESIGN.md and node/config.py imply."""

    paths: PathPolicy = field(default_factory=PathPolicy)
    requests: RequestPolicy = field(default_factory=RequestPolicy)
    directory: DirectoryPolicy = field(default_factory=DirectoryPolicy)
    transport: TransportConfig = field(default_factory=TransportConfig)
    #: A long-poll's wait at the node, seconds (1 to onion.rpc.MAX_WAIT_S).
    wait_s: int = DEFAULT_WAIT_S
    #: Encryption sessions' cache, as Seald's: seconds an entry lives (0: no cache, the
    #: default; -1: no expiry), seconds between cleanups (None: the TTL, at least 10 s;
    #: -1: none), and the store: "memory" (per client), "home" (persistent, sealed under
    #: a key of the account), or an object with set/get/keys/delete (plain or async).
    encryption_session_cache_ttl: float = 0
    encryption_session_cache_cleanup_interval: float | None = None
    encryption_session_cache: Any = "memory"


@dataclass(frozen=True, slots=True)
class Revoked:
    """One link revoked by :meth:`VeilClient.revoke`: its hash, the session key's DID,
    and how many members of the owner's swarm took the record (of how many)."""

    link_hash: str
    did: str
    accepted: int
    members: int


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

    async def revoke(self, target: RevocationTarget) -> list[Revoked]:
        """Revoke before expiry what ``target`` names: a session's DID (every link
        issued to that key), a link's hash (hex; a unique prefix of 8 or more digits), or
        a :class:`DelegatedSession` (its own link). Links this home issued are found in
        its record; a session object is revoked from its own chain.

        Each revocation is signed by this client (the account, or the delegated
        session, which may revoke the links it issued), sent to every member of the
        owner's swarm (at least one must take it; replication brings it to the others),
        and noted in the home. Links already revoked here or expired are skipped;
        :class:`~veil.client.errors.NotRevocable` if nothing is left;
        :class:`~veil.client.errors.UnknownDelegation` if the target names nothing;
        :class:`~veil.onion.errors.NotEntitledToRevoke` if this client is not upstream.
        """
        revoker: Account | SessionKey = (
            self.account if self.account is not None else self._session().key
        )
        now = self.clock.now()
        chains: list[tuple[Chain, bytes]] = []
        try:
            rows = find(self.state, target)
        except UnknownDelegation:
            if not isinstance(target, DelegatedSession):
                raise
            chains.append((target.chain, target.chain.links[-1].digest))
        else:
            for row in rows:
                if row.revoked_at_ms is not None or row.expires_at_ms <= now:
                    continue
                chains.append((Chain.decode(row.chain), row.link))
        if not chains:
            raise NotRevocable(
                f"nothing left to revoke for {_shown_target(target)}: revoked already, or expired"
            )
        done = []
        for chain, link in chains:
            record = sign_revocation(revoker, chain, link, now_ms=now)
            accepted, members = await self._send_revocation(record.encoded, chain)
            await trio.to_thread.run_sync(self.state.mark_delegation_revoked, link, now)
            audience = next(each.audience for each in chain.links if each.digest == link)
            from veil.onion.capability import did_key

            done.append(Revoked(link.hex(), did_key(audience), accepted, members))
        return done

    async def _send_revocation(self, record: bytes, chain: Chain) -> tuple[int, int]:
        owner = chain.owner
        if not isinstance(owner, AccountId):
            raise InvalidArgument("revoking a group's links is not built yet")
        members = [m.as_hop() for m in self.consensus.swarm_of(owner).members]
        errors: list[BaseException] = []
        accepted = 0

        async def one(hop: Hop) -> None:
            nonlocal accepted
            try:
                await self.call(lambda _now: rpc.make_revoke(record), destination=hop)
                accepted += 1
            except VeilError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for hop in members:
                nursery.start_soon(one, hop)
        if not accepted:
            # A member's verdict (e.g. not entitled) is final; a network failure is tried
            # again through the usual retries (another path, wrong_swarm).
            verdicts = [e for e in errors if not isinstance(e, NetworkError)]
            if verdicts:
                raise verdicts[0]
            await self.call(lambda _now: rpc.make_revoke(record), account=owner)
            accepted = 1
        return accepted, len(members)

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

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``veil status`` shows: the network, guards, paths and clock (JSON-able)."""
        consensus = self.consensus
        now = self.clock.now()
        swarm = consensus.swarm_of(self.account_id)
        guards = []
        for record in self.paths.guards:
            node = consensus.node(record.node_id)
            guards.append(
                {
                    "node_id": record.node_id.hex(),
                    "address": f"{node.host}:{node.port}" if node else None,
                    "listed": node is not None,
                    "failures": self.paths.failures(record.node_id),
                    "chosen_at_ms": record.chosen_at_ms,
                }
            )
        return {
            "account_id": str(self.account_id),
            "delegated": None
            if self.delegated is None
            else {
                "did": self.delegated.did,
                "resources": list(self.delegated.authorizations),
                "expires_ms": self.delegated.expires_ms,
            },
            "network": {
                "authorities": [f"{a.host}:{a.port}" for a in self.network.authorities],
                "threshold": self.network.threshold,
                "epoch": consensus.epoch,
                "nodes": len(consensus.nodes),
                "swarms": len(consensus.swarms),
                "fresh": consensus.is_fresh(now),
                "valid_until_ms": consensus.valid_until_ms,
                "source": self.directory.last_source,
                "authority_fetches": self.directory.authority_fetches,
                "last_error": self.directory.last_error,
            },
            "clock_offset_ms": self.clock.offset_ms,
            "guards": guards,
            "paths": [
                {
                    "relays": p.describe(),
                    "failures": p.failures,
                    "successes": p.successes,
                }
                for p in self.paths.paths
            ],
            "paths_rebuilt": self.paths.rebuilt,
            "swarm": {
                "id": f"{swarm.swarm_id:016x}",
                "members": [f"{n.node_id.hex()[:16]} {n.host}:{n.port}" for n in swarm.members],
            },
        }

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


@asynccontextmanager
async def open_client(
    home: Home | str | os.PathLike[str],
    network: NetworkFile | str | os.PathLike[str],
    *,
    account: Account | None = None,
    passphrase: str | None = None,
    delegated: DelegatedSession | str | None = None,
    transport: Transport | None = None,
    config: ClientConfig | None = None,
    clock: LocalClock | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[VeilClient]:
    """Open a client on ``home`` (a :class:`Home` or its directory) and ``network`` (a
    :class:`NetworkFile` or the path of ``network.json``); see the module note.

    ``account`` overrides the identity stored in the home (``passphrase`` opens a sealed
    one). ``delegated`` (a :class:`DelegatedSession` or its serialized string) makes a
    client that acts for the session's account without its seed; the home then needs
    no identity (it keeps the client's state: use one home per worker). ``transport``
    replaces the httpx one (it is closed with the client either way).
    ``clock`` is the local wall clock in ms, for tests (e.g. one five minutes off);
    ``rng`` drives path choice (default: the OS's CSPRNG).
    """
    home = home if isinstance(home, Home) else Home(home)
    if isinstance(delegated, str):
        delegated = DelegatedSession.from_string(delegated)
    if delegated is not None and account is not None:
        raise InvalidArgument("give an account or a delegated session, not both")
    if not isinstance(network, NetworkFile):
        network = read_network_file(network)
    config = config or ClientConfig()
    local = clock or local_clock_ms
    state = await trio.to_thread.run_sync(lambda: open_state(home, clock=lambda: int(local())))
    ours: HttpxTransport | None = None
    own_transport: Transport
    if transport is None:
        own_transport = ours = HttpxTransport(config.transport)
    else:
        own_transport = transport
    try:
        if account is None and delegated is None:
            account = await trio.to_thread.run_sync(home.load_identity, passphrase)
        offset = state.get_clock_offset() or 0
        client = VeilClient(
            account=account,
            home=home,
            network=network,
            state=state,
            transport=own_transport,
            clock=NetworkClock(local, offset),
            config=config,
            rng=rng or random.SystemRandom(),
            delegated=delegated,
        )
        await client._start()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(client.directory.run)
                nursery.start_soon(client._maintain)
                nursery.start_soon(client.onion.prepared.run)
                if client._sessions is not None:
                    await nursery.start(client._sessions.cache.run)
                if ours is not None:
                    # Ours: it may hand read responses to run() (client/transport.py). A
                    # transport given by the caller is the caller's to run, or not.
                    nursery.start_soon(ours.run)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The background tasks do not raise: the group holds the block's exception.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        with trio.CancelScope(shield=True):
            await own_transport.aclose()
            await trio.to_thread.run_sync(state.close)


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


def _shown_target(target: RevocationTarget) -> str:
    if isinstance(target, DelegatedSession):
        return target.did
    if isinstance(target, bytes):
        return target.hex()
    return str(target)[:80]
