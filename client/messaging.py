"""1:1 messages: send to an account's inbox, receive from our own, exactly once.

Design note
-----------
**Sending.** The content is sealed once (:func:`veil.onion.envelope.seal`: signed by us,
sealed to the recipient, padded) and stored in the inbox (namespace 0) of the
recipient at a node of its swarm. A failed store is retried with the *same* envelope:
the node names a message by the hash of its bytes and stores a duplicate once, so
retries never deliver a message twice. The envelope's timestamp is the network's time.

**Receiving** is a loop of retrieves from our inbox at one node of our swarm (kept while
it answers, so that the position is meaningful to it), from the position saved in the
state file: ``last_hash``, the last message taken. Each message is opened (decrypted,
its sender's signature verified), and then, for each message in turn:

1. it is recorded *and* the position moved past it in one transaction
   (:meth:`veil.client.state.ClientState.save_messages_and_position`), unless the state
   already holds its hash (a duplicate: a node re-sent it, or another consumer took it);
2. then it is handed to the caller.

Persist, then yield: a client that stops (or crashes) at any point has either not
recorded a message, and will fetch it again from the old position, or recorded it and
moved past it, so a restarted client neither loses nor repeats one. The one window is a
crash after step 1 and before the caller has acted on the message: the message is then
in the state file (``veil inbox`` lists it, :meth:`Receiver.recorded` returns it) but
the iterator does not hand it out again. Persisting message by message costs one
commit each; a page is persisted at once by :meth:`Receiver.fetch`, which hands the
whole page over in one return.

Positions and swarm members: members of a swarm may hold an inbox in different orders
(each adds replicated messages as they arrive), so a last hash saved while reading one
member can skip messages at another. A receiver therefore reads a member's inbox from
the start the first time it polls it in a process (and whenever another member answers),
dropping by hash what it already holds, and only then follows its saved position.

A message that does not open (not for us, altered, badly signed) is recorded with no
sender and no content, so that it is neither fetched again nor shown; a node that has lost our
position (``last_hash`` unknown to it) answers from the start, and the state's hash
check drops what we already have.

The long-poll: a retrieve asks the node to wait up to ``wait_s`` seconds for a message
(the node answers as soon as one is stored); a poll that fails is retried after a
back-off that grows to :data:`MAX_POLL_BACKOFF_S` seconds, forever: a receiver survives
a network outage.

A receiver acting under a delegated session (:mod:`veil.client.delegation`) holds no
seed, so it cannot open what it retrieves: envelopes are sealed to the account's X25519
key, and that key is the account's Ed25519 signing scalar (libsodium's conversion), so
no session could be given it without being given the account. Such a receiver records
and yields each message *sealed*: ``sender`` None, ``content`` empty, ``envelope`` the
sealed bytes (:attr:`InboxMessage.sealed`), which a holder of the seed opens with
:func:`open_sealed`. A worker can thus fetch, count, forward and delete an account's
messages, never read them. Before each retrieve the session is checked (expired, or no
``retrieve`` in the inbox: :class:`~veil.client.errors.NotAuthorized`, nothing sent); a
node's ``unauthorized`` answer (the capability revoked or expired there) ends
:meth:`Receiver.messages` instead of being retried forever.

Cancellation: cancelling a send may leave the message stored or not (a retry with the
same envelope is then safe); cancelling the receive loop leaves the state consistent
(a save in progress completes in its thread). Errors: see each function.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from veil.client.delegation.session import DelegatedSession
from veil.client.errors import InvalidArgument, NoConsensus, OnionRequestFailed
from veil.client.onion_client import OnionClient
from veil.client.state import ClientState, InboundMessage, ReceivedMessage
from veil.onion import rpc
from veil.onion.backoff import Backoff
from veil.onion.envelope import MAX_CONTENT, open_envelope, seal
from veil.onion.errors import InvalidTtl, NetworkError, ProtocolError, TooLarge, Unauthorized
from veil.onion.keys import Account, AccountId

#: The first bytes of an encryption session's invitation (see
#: :mod:`veil.client.sessions.invites`, which imports this module's neighbours).
GROUP_INVITE_PREFIX = b"veil-group-invite/v1\n"

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_MESSAGE_BYTES",
    "MAX_POLL_BACKOFF_S",
    "InboxMessage",
    "MessageTooLarge",
    "Receiver",
    "Sent",
    "open_sealed",
    "send_message",
]

#: The largest message content (bytes, UTF-8 for text).
MAX_MESSAGE_BYTES = MAX_CONTENT
#: Default time a message waits in the recipient's inbox: 14 days, the inbox's maximum.
DEFAULT_TTL_S = rpc.MAX_TTL_MS / 1000
#: Longest wait (s) between two polls after failures.
MAX_POLL_BACKOFF_S = 30.0
#: Waits between polls after failures: 0.5 s, doubled, up to MAX_POLL_BACKOFF_S.
POLL_BACKOFF = Backoff(first_s=0.5, max_s=MAX_POLL_BACKOFF_S)
#: A long-poll's wait at the node (s): below rpc.MAX_WAIT_S.
DEFAULT_WAIT_S = 25
#: A long-poll try's client-side limit: the node may hold the request for ``wait``
#: seconds, and a relay gives up on the next hop after its hop timeout (40 s on every
#: node, node/config.py), so a client waits past both.
LONG_POLL_MARGIN_S = 20.0
LONG_POLL_MIN_TIMEOUT_S = 45.0
#: A send retried after rate_limited answers for up to this long (s).
SEND_DEADLINE_S = 60.0
#: Waits between those retries: 0.25 s, doubled, up to 5 s.
SEND_BACKOFF = Backoff(first_s=0.25, max_s=5.0)


class MessageTooLarge(TooLarge):
    """The message is over :data:`MAX_MESSAGE_BYTES`."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A message stored in the recipient's inbox."""

    hash: bytes  # the node's name for it (onion.rpc.message_hash)
    to: AccountId
    expiry_ms: int  # network time at which the node drops it
    size: int  # bytes of the sealed envelope


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """A received message, verified: ``sender`` signed ``content`` for us.

    Or, received under a delegated session (no seed), a *sealed* one: ``sender`` None,
    ``content`` empty, ``sent_ms`` 0 and ``envelope`` the sealed bytes, for a holder of
    the seed to open (:func:`open_sealed`)."""

    hash: bytes
    sender: AccountId | None
    content: bytes
    sent_ms: int  # the sender's claim (its network time when it sealed the message)
    received_ms: int  # our local clock when we recorded it
    seq: int = 0  # arrival order in the state file (0 until read back from it)
    envelope: bytes | None = None  # the sealed bytes of a message not opened

    @property
    def sealed(self) -> bool:
        """True for a message received without the seed (see the class note)."""
        return self.envelope is not None

    @property
    def text(self) -> str:
        """The content as text (UTF-8; undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    @classmethod
    def from_record(cls, record: ReceivedMessage) -> InboxMessage:
        if record.sender is None:  # sealed (recorded by a delegated receiver)
            return cls(record.hash, None, b"", 0, record.received_at_ms, record.seq, record.content)
        return cls(
            record.hash,
            record.sender,
            record.content,
            record.timestamp_ms,
            record.received_at_ms,
            record.seq,
        )


def open_sealed(account: Account, message: InboxMessage) -> InboxMessage:
    """A sealed message (received under a delegated session) opened with the account's
    seed: its verified sender and content. A message already open is returned as is;
    :class:`~veil.onion.errors.ProtocolError` for one that does not open."""
    if message.envelope is None:
        return message
    opened = open_envelope(account, message.envelope)
    return InboxMessage(
        message.hash,
        opened.sender,
        opened.content,
        opened.timestamp_ms,
        message.received_ms,
        message.seq,
    )


def _content(content: bytes | str) -> bytes:
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"message too large: {len(data)} bytes, the most is {MAX_MESSAGE_BYTES}"
        )
    return data


def check_ttl(ttl_s: float) -> int:
    """``ttl_s`` (seconds) as ms, or :class:`~veil.onion.errors.InvalidTtl` (a
    :class:`ValueError`) outside the inbox's limits, or not a finite number."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s):
        raise InvalidTtl(f"a TTL is a finite number of seconds, not {ttl_s!r}")
    ttl_ms = round(ttl_s * 1000)
    if not rpc.MIN_TTL_MS <= ttl_ms <= rpc.MAX_TTL_MS:
        raise InvalidTtl(
            f"a TTL is {rpc.MIN_TTL_MS // 1000} s to {rpc.MAX_TTL_MS // 1000} s "
            f"(14 days), not {ttl_s:g} s"
        )
    return ttl_ms


async def send_message(
    onion: OnionClient,
    sender: Account,
    to: AccountId,
    content: bytes | str,
    *,
    ttl_s: float = DEFAULT_TTL_S,
) -> Sent:
    """Seal ``content`` for ``to`` and store it in ``to``'s inbox; see the module note.

    Raises :class:`MessageTooLarge`, :class:`~veil.onion.errors.InvalidTtl` (a TTL out
    of limits) before anything is sent; :class:`~veil.client.errors.OnionRequestFailed`
    if no node could
    be reached (status ``rate_limited`` if the recipient's inbox kept refusing for
    :data:`SEND_DEADLINE_S`); a node's verdict otherwise.
    """
    data = _content(content)
    ttl_ms = check_ttl(ttl_s)
    envelope = seal(sender, to, data, timestamp_ms=onion.clock.now())

    def build(now_ms: int) -> bytes:
        return rpc.make_store(to, envelope, ttl_ms, now_ms=now_ms)

    # The recipient's inbox has a rate limit per node; a send keeps trying (with the
    # same envelope, see the module note) for a while rather than failing at once.
    give_up = trio.current_time() + SEND_DEADLINE_S
    refusals = 0
    while True:
        try:
            answer = await onion.call(build, account=to)
            break
        except OnionRequestFailed as exc:
            refusals += 1
            delay = SEND_BACKOFF.delay_s(refusals)
            if exc.status != "rate_limited" or trio.current_time() + delay > give_up:
                raise
        await trio.sleep(delay)
    assert answer.reply.result is not None
    result = rpc.StoreResult.from_wire(answer.reply.result)
    return Sent(result.hash, to, result.expiry_ms, len(envelope))


class Receiver:
    """Our inbox: long-polls, opens, deduplicates and records messages (module note)."""

    def __init__(
        self,
        onion: OnionClient,
        account: Account | DelegatedSession,
        state: ClientState,
        *,
        wait_s: int = DEFAULT_WAIT_S,
    ) -> None:
        if not 1 <= wait_s <= rpc.MAX_WAIT_S:
            raise InvalidArgument(f"wait_s must be 1 to {rpc.MAX_WAIT_S}")
        self.onion = onion
        #: The account's seed, or None under a delegated session (then messages stay sealed).
        self.account: Account | None = account if isinstance(account, Account) else None
        self.session = account if isinstance(account, DelegatedSession) else None
        self.account_id: AccountId = account.id if isinstance(account, Account) else account.account
        self.state = state
        self.wait_s = wait_s
        #: The node we poll (kept while it answers, so our position means something).
        self._node: bytes | None = None
        #: The node whose order our saved position follows: one we have read from the
        #: start in this process. Swarm members may hold messages in different orders
        #: (replication), so a last hash from one member can skip messages at another.
        self._synced: bytes | None = None
        self.last_error: str | None = None

    # --- one retrieve ------------------------------------------------------------------------

    async def _retrieve(self, wait_s: int) -> rpc.RetrieveResult:
        me = self.account_id
        session = self.session
        signer: Any = self.account
        if session is not None:
            session.require("retrieve", rpc.INBOX, now_ms=self.onion.clock.now())
            signer = session.signer
        # Until we have read a node's inbox from its start, ask from the start (what we
        # already hold is dropped by hash): see _synced.
        last_hash = self.state.get_position(me, rpc.INBOX) if self._synced else None

        def build(now_ms: int) -> bytes:
            return rpc.make_retrieve(signer, now_ms=now_ms, last_hash=last_hash, wait_s=wait_s)

        timeout_s = None
        if wait_s:
            timeout_s = max(wait_s + LONG_POLL_MARGIN_S, LONG_POLL_MIN_TIMEOUT_S)
        try:
            answer = await self.onion.call(
                build,
                account=me,
                prefer=self._synced or self._node,
                timeout_s=timeout_s,
                deadline_s=timeout_s,
            )
            assert answer.reply.result is not None
            result = rpc.RetrieveResult.from_wire(answer.reply.result)  # SchemaError
        except BaseException:
            self._node = None  # try another member next time
            raise
        node = answer.node.node_id
        self._node = node
        if last_hash is None:
            self._synced = node  # read from its start: our position now follows its order
        elif node != self._synced:
            self._synced = None  # another member answered after our hash: re-read it whole
        return result

    def _open(self, message: rpc.Message) -> InboundMessage:
        received = int(self.onion.clock.local())
        if self.account is None:
            # Under a delegated session: kept sealed (see the module note).
            return InboundMessage(
                hash=message.hash,
                sender=None,
                timestamp_ms=0,
                content=message.data,
                received_at_ms=received,
            )
        try:
            opened = open_envelope(self.account, message.data)
        except ProtocolError:
            # Not for us, altered, or badly signed: recorded without a sender, so it is
            # neither fetched again nor shown.
            return InboundMessage(
                hash=message.hash,
                sender=None,
                timestamp_ms=0,
                content=b"",
                received_at_ms=received,
            )
        if opened.content.startswith(GROUP_INVITE_PREFIX):
            # An encryption session's invitation (veil.client.sessions.invites): for the
            # sessions' code, which reads it from the inbox; recorded, never shown.
            return InboundMessage(
                hash=message.hash,
                sender=None,
                timestamp_ms=0,
                content=b"",
                received_at_ms=received,
            )
        return InboundMessage(
            hash=message.hash,
            sender=opened.sender,
            timestamp_ms=opened.timestamp_ms,
            content=opened.content,
            received_at_ms=received,
        )

    async def _save(self, inbound: Sequence[InboundMessage], last_hash: bytes) -> list[bytes]:
        return await trio.to_thread.run_sync(
            self.state.save_messages_and_position, self.account_id, rpc.INBOX, inbound, last_hash
        )

    # --- the public face -------------------------------------------------------------------

    async def fetch(self) -> list[InboxMessage]:
        """Retrieve every message waiting now (no long-poll), record them, and return
        the new ones in arrival order. Each page is recorded in one transaction before
        the next is asked for. Raises what :meth:`OnionClient.call` raises."""
        out: list[InboxMessage] = []
        while True:
            result = await self._retrieve(0)
            if result.messages:
                fresh = [m for m in result.messages if not self.state.has_message(m.hash)]
                inbound = [self._open(m) for m in fresh]
                new = set(await self._save(inbound, result.messages[-1].hash))
                out.extend(_shown(inbound, new, sealed=self.account is None))
            if not result.more:
                return out

    async def messages(self) -> AsyncIterator[InboxMessage]:
        """New messages as they arrive, forever, each recorded before it is yielded.

        Use it in an ``async for``; break out of it (or cancel it) to stop. The loop
        survives failures of the network and of nodes (an unreachable swarm, a node that
        answers nonsense or refuses us, a consensus with too few nodes for a path:
        retried with a back-off; the last error is in :attr:`last_error`); it raises only
        what retrying cannot fix: the state file failing
        (:class:`~veil.client.errors.StateError`). Never yields inside a cancel scope.
        """
        failures = 0  # polls failed in a row
        wait_s = 0  # first drain what is waiting, then long-poll
        while True:
            try:
                result = await self._retrieve(wait_s)
            except Unauthorized:
                if self.session is not None:
                    raise  # the capability was revoked or expired: retrying cannot help
                failures += 1
                await trio.sleep(POLL_BACKOFF.delay_s(failures))
                continue
            except (NetworkError, ProtocolError, NoConsensus) as exc:
                # NoConsensus: the consensus held lists too few nodes for a path that
                # leaves out the destination (nodes stopped); a later one may not.
                self.last_error = str(exc)
                failures += 1
                await trio.sleep(POLL_BACKOFF.delay_s(failures))
                continue
            failures = 0
            self.last_error = None
            for message in result.messages:
                if self.state.has_message(message.hash):
                    continue
                inbound = self._open(message)
                new = await self._save([inbound], message.hash)
                for shown in _shown([inbound], set(new), sealed=self.account is None):
                    yield shown
            if result.messages:
                # Move the position past duplicates at the page's end (else a page of
                # duplicates would be asked for again and again).
                last = result.messages[-1].hash
                if self.state.get_position(self.account_id, rpc.INBOX) != last:
                    await self._save([], last)
            wait_s = 0 if result.more else self.wait_s

    def recorded(self, *, after_seq: int = 0, limit: int = 100) -> list[InboxMessage]:
        """Messages recorded in the state file (received by this client, whether or not
        a caller saw them), oldest first, after ``after_seq``; at most ``limit``."""
        records = self.state.list_messages(
            self.account_id, namespace=rpc.INBOX, after_seq=after_seq, limit=limit
        )
        if self.account is None:  # sealed ones (those that did not open have no content)
            return [InboxMessage.from_record(r) for r in records if r.content]
        return [InboxMessage.from_record(r) for r in records if r.sender is not None]


def _shown(
    inbound: Sequence[InboundMessage], new: set[bytes], *, sealed: bool = False
) -> list[InboxMessage]:
    """The messages a caller sees: newly recorded, with a verified sender (or, for a
    receiver without the seed, sealed)."""
    if sealed:
        return [
            InboxMessage(m.hash, None, b"", 0, m.received_at_ms, envelope=m.content)
            for m in inbound
            if m.hash in new
        ]
    return [
        InboxMessage(m.hash, m.sender, m.content, m.timestamp_ms, m.received_at_ms)
        for m in inbound
        if m.hash in new and m.sender is not None
    ]
