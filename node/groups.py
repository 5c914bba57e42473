"""Encryption sessions at the node: each group's state, and the checks of its requests.

Design note
-----------
An encryption session (issue 13) lives in the swarm of its group ID (``03...``): its
signed records in namespace 1 (:data:`~veil.onion.group.STATE_NAMESPACE`), its messages
(opaque ciphertext) in namespace 2 (:data:`~veil.onion.group.MESSAGES_NAMESPACE`). The
rules are :mod:`veil.onion.group`'s; this module applies them to the node's store.

Who reads. A request is signed by the session key, through a membership chain, or
(a ``retrieve`` of namespace 1 or 2 only) by a member's own account key with no chain:
:meth:`GroupGuard.reader` gives :func:`~veil.onion.rpc.verify_request` (the one place
that decides) the lookup it asks, from the session's state as this node holds it: the
account ``account_id_of_ed25519(pubkey_ed25519)`` is a live member now (not revoked,
link not expired) with ``read``, and the session has not ended. So a new member reads
its session without an invitation, from any node that holds the records adding it.

Requests (:meth:`GroupGuard.check_request`, called by the storage service after the
request's chain and signature were verified, without the account revocation index):

* only namespaces 1 and 2; ``delete``, ``delete_all`` and ``expire`` only in 2 (records
  are a grow-only set: deleting or shortening a revocation would give a revoked member
  its access back on this node), and never ``delete_all`` of every namespace;
* a request signed through a chain is refused if a link of the chain is revoked *by the
  session's records* (:attr:`~veil.onion.group.SessionState.revoked_links`: group
  revocations are RevokeRecords in namespace 1, not the ``revoke`` RPC);
* :func:`~veil.onion.group.check_access`: after the session's end, every store and read
  is refused with :class:`~veil.onion.errors.SessionRevoked` (wire status ``gone``);
* a store into namespace 1 is one record, judged by
  :func:`~veil.onion.group.check_record` against the state this node holds (size checked
  before parsing; the first record must be the genesis, signed by the session key,
  which is the group ID's key);
* TTLs (:func:`check_record_ttl`): a revocation record is stored at least until the
  link it revokes expires, and the end for the longest TTL (30 days), since a record
  that the store sweeps no longer counts: a short-lived revocation would give the
  revoked member its access back. (A membership link lives at most 30 days, as long as
  anything in a private namespace, and so does the genesis: storing the same bytes
  again does not extend a message's life, so a session lives at most 30 days at the
  nodes from its genesis's store; see the README.)

State. :class:`GroupStates` keeps a :class:`~veil.onion.group.SessionState` per group
in memory, loaded lazily from the records the store holds in namespace 1, at most
``max_groups`` of them (least recently used dropped first: it is rebuilt from the store
when needed again), each built from at most ``max_records`` records of at most
``max_bytes`` bytes in all (a group over either is refused new records,
:class:`~veil.onion.errors.TooLarge`), and all of them at most ``max_total_bytes`` of
records (least recently used dropped first). A cold load builds the state, checking
every record's signatures, in a worker thread (not on the trio thread); its cost, a
fraction of a millisecond a record, is what a member of many sessions can make a node
spend by cycling through more sessions than it keeps: bounded by ``max_records``.
Records are only added (never deleted, except by their TTL: a state loaded again after
a sweep no longer holds expired records).

The session's end. Once an end record is accepted (from a client or a peer), the node
deletes the session's messages (namespace 2, leaving the store's tombstones, so that no
copy comes back by replication) and keeps namespace 1 (the end record, the genesis and
the chains that prove it: the tombstone) until their TTL runs out.

Replication (:meth:`GroupGuard.admit_replica`). A copy from a peer has passed
:func:`~veil.onion.replication_frames.check_message` (its store proof, with its chain,
at its signed time). For a group it must also:

* not be for an ended session (except records of namespace 1, so the end and what
  proves it reach every member);
* in namespace 2: carry a proof whose chain has no link revoked by the session's
  records;
* in namespace 1: be a record of this session that the state judges valid on its own
  (signatures, chains, rights, policy: :attr:`~veil.onion.group.SessionState.rejected`
  stays without it). Records arrive in any order, and the state is a function of the
  *set*: a record whose genesis is not here yet is accepted (the state keeps it aside
  until its genesis comes, then judges it), and a record signed before its signer's
  revocation but delivered after it is accepted (the state dates it), while
  :func:`~veil.onion.group.check_record` (clients' stores) asks about *now*. A record
  the state rejects is refused.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable

import trio

from veil.onion import rpc
from veil.onion.capability import Chain, Proven
from veil.onion.errors import (
    BadTtl,
    CapabilityError,
    CapabilityRevoked,
    GroupError,
    ProtocolError,
    SessionRevoked,
    TooLarge,
    VeilError,
)
from veil.onion.group import (
    MESSAGES_NAMESPACE,
    STATE_NAMESPACE,
    EndRecord,
    Record,
    RevokeRecord,
    SessionState,
    check_access,
    check_record,
    decode_record,
)
from veil.onion.keys import AccountId, GroupId
from veil.onion.replica import ReplicaMessage

from .store import MessageStore

__all__ = ["GroupGuard", "GroupStates"]

#: Namespaces a group's requests may name.
GROUP_NAMESPACES = frozenset({STATE_NAMESPACE, MESSAGES_NAMESPACE})


class GroupStates:
    """The sessions' states this node holds (see the module note)."""

    def __init__(
        self,
        store: MessageStore,
        *,
        max_groups: int = 1024,
        max_records: int = 2000,
        max_bytes: int = 8 * 1024 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
        skew_ms: int = rpc.CLOCK_SKEW_MS,
    ) -> None:
        self.store = store
        self.max_groups = max_groups
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        self.skew_ms = skew_ms
        self._states: OrderedDict[bytes, tuple[SessionState, int]] = OrderedDict()
        #: The records' bytes of the states kept (bounded by ``max_total_bytes``).
        self.total_bytes = 0
        #: States built from the store (cold loads), a counter.
        self.loads = 0

    async def get(self, group: GroupId) -> SessionState:
        key = group.ed25519_public
        found = self._states.get(key)
        if found is not None:
            self._states.move_to_end(key)
            return found[0]
        records: list[bytes] = []
        size = 0
        after: bytes | None = None
        while True:
            page = await self.store.retrieve(
                group,
                STATE_NAMESPACE,
                after_hash=after,
                limit=min(256, self.max_records + 1 - len(records)),
                max_bytes=self.max_bytes + 1,
            )
            for m in page.messages:
                records.append(m.data)
                size += len(m.data)
            if len(records) > self.max_records or size > self.max_bytes:
                # More than this node keeps (its limits were lowered since): a part of
                # the records could leave a revocation out, so refuse, never guess.
                raise TooLarge("this session holds more records than this node keeps")
            if not page.more or not page.messages:
                break
            after = page.messages[-1].hash
        # Building a state checks every record's signatures (a fraction of a ms each):
        # off the trio thread, so that a cold load does not stall the node's requests.
        state = await trio.to_thread.run_sync(
            functools.partial(SessionState, group, records, skew_ms=self.skew_ms)
        )
        self.loads += 1
        found = self._states.get(key)
        if found is not None:  # loaded meanwhile by another request (and maybe added to)
            return found[0]
        self._put(key, state, size)
        return state

    def _put(self, key: bytes, state: SessionState, size: int) -> None:
        old = self._states.pop(key, None)
        if old is not None:
            self.total_bytes -= old[1]
        self._states[key] = (state, size)
        self.total_bytes += size
        while len(self._states) > 1 and (
            len(self._states) > self.max_groups or self.total_bytes > self.max_total_bytes
        ):
            _, (_, dropped) = self._states.popitem(last=False)
            self.total_bytes -= dropped

    def room_for(self, state: SessionState, data: bytes) -> None:
        """:class:`TooLarge` if one more record of ``data`` would exceed the limits."""
        size = self._states.get(state.session, (state, 0))[1]
        if len(state.records) >= self.max_records or size + len(data) > self.max_bytes:
            raise TooLarge("this session holds as many records as this node keeps")

    def added(self, state: SessionState, data: bytes) -> SessionState:
        """The state with the record ``data`` added (kept as this group's state)."""
        size = self._states.get(state.session, (state, 0))[1]
        new = state.add(data)
        self._put(state.session, new, size + len(data))
        return new

    def forget(self, group: GroupId) -> None:
        old = self._states.pop(group.ed25519_public, None)
        if old is not None:
            self.total_bytes -= old[1]


def check_record_ttl(record: Record, ttl_ms: int, now_ms: int) -> None:
    """:class:`BadTtl` for a revocation stored for less than its revoked link may still
    live, or an end stored for less than the longest TTL: once swept, either would give
    the session back to those it was taken from, on this node."""
    if isinstance(record, RevokeRecord) and ttl_ms < record.revocation.expires_ms - now_ms:
        raise BadTtl("a revocation is kept at least until its revoked link expires")
    if isinstance(record, EndRecord) and ttl_ms < rpc.MAX_TTL_PRIVATE_MS:
        raise BadTtl(f"a session's end is kept for the longest TTL ({rpc.MAX_TTL_PRIVATE_MS} ms)")


def _revoked_link(state: SessionState, digests: tuple[bytes, ...] | list[bytes]) -> None:
    for depth, digest in enumerate(digests):
        if digest in state.revoked_links:
            raise CapabilityRevoked(f"link {depth} of the chain is revoked by the session")


class GroupGuard:
    """A node's checks of a group's requests and replicated copies (module note)."""

    def __init__(self, states: GroupStates, clock: Callable[[], int], skew_ms: int) -> None:
        self.states = states
        self.store = states.store
        self.clock = clock
        self.skew_ms = skew_ms

    @staticmethod
    def check_shape(req: rpc.Request) -> None:
        """Before any signature: namespaces 1 and 2 only, and no delete, delete_all or
        expire of the records; no revoke RPC for a group."""
        if isinstance(req, rpc.RevokeRequest):
            raise ProtocolError("a session's revocations are records in its namespace 1")
        if isinstance(req, rpc.InfoRequest | rpc.GetSwarmRequest):
            return
        namespace = req.namespace
        if namespace not in GROUP_NAMESPACES:
            raise ProtocolError(
                f"a session's requests name namespace {STATE_NAMESPACE} (records) or "
                f"{MESSAGES_NAMESPACE} (messages)"
            )
        if namespace == STATE_NAMESPACE and isinstance(
            req, rpc.DeleteRequest | rpc.DeleteAllRequest | rpc.ExpireRequest
        ):
            raise ProtocolError("a session's records are only added (they expire by TTL)")

    async def reader(self, req: rpc.Request) -> rpc.GroupReader | None:
        """For a group's retrieve signed without a chain by a key that is not the
        group's: the lookup :func:`~veil.onion.rpc.verify_request` asks whether the
        signer's account may read (a live member with ``read`` in the session's state as
        this node holds it, namespaces 1 and 2); None for every other request."""
        if not isinstance(req, rpc.RetrieveRequest):
            return None
        auth = req.auth
        if auth is None or auth.capability is not None:
            return None
        group = req.account
        assert isinstance(group, GroupId)
        if auth.pubkey_ed25519 == group.ed25519_public:
            return None
        state = await self.states.get(group)
        now = self.clock()

        def reads(account: AccountId, namespace: int) -> bool:
            return namespace in GROUP_NAMESPACES and state.may_read(account, now_ms=now)

        return reads

    async def check_request(self, req: rpc.Request, proven: Proven | None) -> None:
        """After the chain and signature: the session's revocations, its end, and a
        record's own judgement (see the module note)."""
        if isinstance(req, rpc.InfoRequest | rpc.GetSwarmRequest | rpc.RevokeRequest):
            return
        group = req.account
        assert isinstance(group, GroupId)
        state = await self.states.get(group)
        if proven is not None:
            _revoked_link(state, proven.link_digests)
        check_access(state, method=req.method, namespace=req.namespace)
        if isinstance(req, rpc.StoreRequest) and req.namespace == STATE_NAMESPACE:
            now = self.clock()
            record = check_record(state, req.data, now_ms=now, skew_ms=self.skew_ms)
            check_record_ttl(record, req.ttl_ms, now)
            if record.digest not in state.records:
                self.states.room_for(state, req.data)

    async def stored(self, group: GroupId, namespace: int, data: bytes) -> None:
        """A record or message was stored here (by a client or a peer): keep the state
        up to date, and end the session if the record is its end."""
        if namespace != STATE_NAMESPACE:
            return
        state = await self.states.get(group)
        was_ended = state.ended
        try:
            digest = decode_record(data).digest
        except GroupError:
            return
        if digest not in state.records:
            state = self.states.added(state, data)
        if state.ended and not was_ended:
            await self.store.delete_all(group, MESSAGES_NAMESPACE)

    async def admit_replica(self, group: GroupId, m: ReplicaMessage) -> None:
        """Whether a copy from a peer (already through ``check_message``) may be stored:
        returns, or raises the typed error that refuses it (module note)."""
        if m.namespace not in GROUP_NAMESPACES:
            raise ProtocolError("a session's messages are in namespaces 1 and 2")
        state = await self.states.get(group)
        if m.namespace == MESSAGES_NAMESPACE:
            if state.ended:
                raise SessionRevoked("the session was revoked")
            proof = rpc.decode_proof(m.proof) if m.proof is not None else None
            if proof is not None and proof.capability is not None:
                try:
                    chain = Chain.decode(proof.capability)
                except CapabilityError as exc:  # pragma: no cover - check_message did
                    raise ProtocolError(str(exc)) from None
                _revoked_link(state, [link.digest for link in chain.links])
            return
        try:
            record = decode_record(m.data)
        except VeilError:
            raise
        if record.session != state.session:
            raise ProtocolError("the record is of another session")
        if record.digest in state.records:
            return
        if state.ended and not isinstance(record, EndRecord):
            raise SessionRevoked("the session was revoked")
        if m.proof is not None:
            check_record_ttl(record, rpc.decode_proof(m.proof).ttl_ms, m.timestamp_ms)
        self.states.room_for(state, m.data)
        trial = state.add(record)
        error = trial.rejected.get(record.digest)
        if error is not None:
            raise error
