"""The follow machinery channels and rooms share: unsigned long-polls of one account's
public-read namespace, on paths and timing of their own, resuming exactly once.

Design note
-----------
A :class:`PublicPoller` reads one thing followed (a channel's namespace -1, a room's -2)
with *unsigned* long-poll retrieves: the request names the account read, never the
reader, and goes through an onion path, so the node sees a relay's address and the
account. Each poller has its own :class:`~veil.client.paths.PathSelector` (its own
relays; the guards are the home's, as Tor shares guards across circuits), starts after a
random delay (:data:`START_JITTER_S`) and draws each long-poll's wait anew
(:data:`WAIT_RANGE_S`), so the polls of two things followed neither share a path nor
line up in time; nothing identifies the reader across them (no key, no cookie, no
session). A failed poll is retried after a jittered back-off (at most
:data:`MAX_BACKOFF_S`); the last failure is kept in :attr:`PublicPoller.last_error`.

**Exactly once across restarts** is a contract with the caller, which keeps a
:class:`Position` (the hashes taken, and a position): :meth:`PublicPoller.messages`
yields only messages whose hash the position does not hold, and the caller records each
one (its hash, and the position moved past it, in one transaction) *before* it hands
what it made of it to its own caller: persist, then yield. A node's copies may come in
another order than another member's, so a poll sends the position as ``last_hash`` only
to the node it read from the start (``synced``); after a switch to another node it reads
that node's namespace from the start again and drops by hash what is held.

Cancellation: :meth:`PublicPoller.messages` may be cancelled or closed at any await;
what the caller recorded stays recorded. Closing it (or :meth:`PublicPoller.close`)
stops following the consensus for this poller's paths.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Final, Protocol

import trio

from veil.client.paths import PathSelector
from veil.onion import rpc
from veil.onion.errors import NetworkError, ProtocolError
from veil.onion.keys import AccountId

if TYPE_CHECKING:
    from veil.client.onion_client import OnionClient
    from veil.client.veil_client import VeilClient

__all__ = ["MAX_BACKOFF_S", "START_JITTER_S", "WAIT_RANGE_S", "Position", "PublicPoller"]

#: Long-poll waits are drawn from this range (s) for each poll (rpc.MAX_WAIT_S is 30).
WAIT_RANGE_S: Final = (12, 28)
MAX_BACKOFF_S: Final = 30.0
#: A poller's first poll waits a random time up to this (s): followed things do not
#: start together.
START_JITTER_S: Final = 2.0


class Position(Protocol):
    """What a reader keeps of one thing followed (persisted: see the module note)."""

    def position(self) -> bytes | None:
        """The hash of the last message taken (None: none yet)."""
        ...

    def held(self, message_hash: bytes) -> bool:
        """Whether the message was taken already."""
        ...

    def move_to(self, message_hash: bytes) -> None:
        """Move the position to a message held already (the end of a page)."""
        ...


class PublicPoller:
    """Unsigned long-poll reads of ``account``'s public-read ``namespace`` (see the
    module note). ``paths`` and ``onion`` are this poller's own; ``rng`` its timing."""

    def __init__(
        self,
        client: VeilClient,
        account: AccountId,
        namespace: int,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if rpc.read_needs_auth(namespace):
            raise ValueError(f"namespace {namespace} is not public-read")
        self.client = client
        self.account = account
        self.namespace = namespace
        self.rng = rng or random.SystemRandom()
        self.paths = PathSelector(
            client.state, policy=client.config.paths, rng=self.rng, now_ms=client.clock.local
        )
        self.onion: OnionClient | None = None
        #: The last failed poll's error (None: none failed yet).
        self.last_error: str | None = None
        self._node: bytes | None = None
        self._synced: bytes | None = None
        self._unwatch: Callable[[], None] | None = None

    async def _onion(self) -> OnionClient:
        if self.onion is None:
            from veil.client.onion_client import OnionClient

            await self.paths.load()
            self.paths.set_consensus(self.client.consensus)
            self._unwatch = self.client.watch_consensus(self.paths.set_consensus)
            self.onion = OnionClient(
                self.client.transport,
                self.paths,
                self.client.clock,
                policy=self.client.config.requests,
            )
        return self.onion

    def close(self) -> None:
        """Stop following the consensus (this poller's paths are no longer kept up)."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    async def retrieve(self, last_hash: bytes | None, wait_s: int) -> rpc.RetrieveResult:
        """One unsigned page after ``last_hash`` if the node asked is the one read from
        the start, else from the start; waits up to ``wait_s`` for news (0: none)."""
        onion = await self._onion()
        last = last_hash if self._synced else None
        account, namespace = self.account, self.namespace

        def build(now_ms: int) -> bytes:
            return rpc.make_retrieve(
                account, now_ms=now_ms, namespace=namespace, last_hash=last, wait_s=wait_s
            )

        timeout = max(wait_s + 20.0, 45.0) if wait_s else None
        try:
            answer = await onion.call(
                build,
                account=account,
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

    async def read_all(self, *, max_pages: int = 1000) -> list[rpc.Message]:
        """Every message the namespace holds now (no waiting), page by page from one
        node, on this poller's paths: unsigned, as the long-polls. If another node
        answers midway, reading starts again there (a position is one node's)."""
        onion = await self._onion()
        account, namespace = self.account, self.namespace
        for _ in range(3):
            pages: list[rpc.Message] = []
            last: bytes | None = None
            node: bytes | None = None
            for _ in range(max_pages):
                after = last

                def build(now_ms: int, after: bytes | None = after) -> bytes:
                    return rpc.make_retrieve(
                        account, now_ms=now_ms, namespace=namespace, last_hash=after
                    )

                answer = await onion.call(build, account=account, prefer=node or self._node)
                assert answer.reply.result is not None
                result = rpc.RetrieveResult.from_wire(answer.reply.result)
                if node is not None and answer.node.node_id != node:
                    break  # another node: its pages follow its own order
                node = answer.node.node_id
                pages.extend(result.messages)
                if not result.more or not result.messages:
                    return pages
                last = result.messages[-1].hash
            else:
                return pages
        return pages

    async def pages(self, log: Position) -> AsyncGenerator[tuple[list[rpc.Message], bool], None]:
        """Each page read, as (its messages whose hash ``log`` does not hold, whether
        more follow at once), forever; a page with nothing new too (``more`` False says
        the reader has caught up). The caller records what it takes before it asks for
        the next page; the position moves to the page's end then."""
        await trio.sleep(self.rng.uniform(0, START_JITTER_S))
        failures = 0
        wait_s = 0
        try:
            while True:
                try:
                    result = await self.retrieve(log.position(), wait_s)
                except (NetworkError, ProtocolError) as exc:
                    self.last_error = str(exc)
                    failures += 1
                    await trio.sleep(
                        min(MAX_BACKOFF_S, 0.5 * 2**failures) * self.rng.uniform(0.5, 1)
                    )
                    continue
                failures = 0
                yield [m for m in result.messages if not log.held(m.hash)], result.more
                if result.messages and log.position() != result.messages[-1].hash:
                    log.move_to(result.messages[-1].hash)
                wait_s = 0 if result.more else self.rng.randint(*WAIT_RANGE_S)
        finally:
            self.close()

    async def messages(self, log: Position) -> AsyncGenerator[rpc.Message, None]:
        """Messages whose hash ``log`` does not hold, as they come, forever; the caller
        records each before it takes the next (see the module note)."""
        async with aclosing(self.pages(log)) as pages:
            async for fresh, _ in pages:
                for message in fresh:
                    if not log.held(message.hash):
                        yield message
