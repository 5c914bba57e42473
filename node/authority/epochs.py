"""Epochs: freezing this authority's vote, combining the votes, signing the consensus.

Design note
-----------
Epoch ``E`` covers ``[E * interval, (E + 1) * interval)`` of the authorities' clocks
(assumed NTP-synchronized to about a second). For each epoch:

1. At its start the authority freezes its vote for ``E``: the live, unexpired
   descriptors (``GET /vote?epoch=E`` serves it from then on). If it has not measured
   yet (:mod:`.liveness`), it waits for its first round of checks until ``vote_delay``
   (when the peers fetch votes) and freezes the vote then; still not measured, it casts
   no vote for ``E`` (nor signs a consensus of ``E``).
2. After ``vote_delay`` it fetches the consensus of ``E - 1`` from its peers and merges
   their signatures (or adopts theirs, if the threshold signed theirs and not ours,
   :mod:`.catch_up`): so all authorities agree on the previous consensus, whose swarm
   assignment the next one keeps (sticky swarms, :mod:`veil.onion.swarm`). Then it fetches
   the peers' votes for ``E`` (retrying those that do not have one yet until
   ``2 * vote_delay``).
3. With fewer than ``threshold`` votes it skips the epoch (no node could be listed by
   ``threshold`` votes); the previous consensus stays valid for two more intervals.
   Otherwise it combines the votes (:func:`veil.onion.vote.combine_votes`: a node listed by
   ``threshold`` votes, with its latest descriptor) and builds the body with
   :func:`veil.onion.directory.make_consensus_body`, ``valid_after = E * interval`` and
   ``previous`` = the assignment of the latest consensus before ``E`` that a threshold
   of pinned authorities signed. Identical votes and previous consensus give identical
   bytes.
4. It signs the body, serves it at once (a consensus with fewer than ``threshold``
   signatures is served too: readers refuse it with ``BelowThreshold``, which is
   right), and fetches the peers' signatures of the same digest until all have signed
   or the epoch is nearly over, serving the document again each time one is added.

Votes and documents of the last :data:`KEEP_EPOCHS` epochs are kept, for late peers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from veil.onion.directory import (
    Authority,
    ConsensusSignature,
    NodeDescriptor,
    make_consensus_body,
    parse_consensus_body,
    sign_consensus,
)
from veil.onion.errors import ProtocolError
from veil.onion.vote import (
    Vote,
    combine_votes,
    make_vote,
    parse_signature_doc,
    parse_vote,
    vote_descriptors,
)

from ..logging import log_event
from .catch_up import CatchUp
from .state import HeldConsensus

__all__ = ["KEEP_EPOCHS", "Epochs"]

log = logging.getLogger("veil.authority")

#: Epochs of votes and consensus documents kept (served to late peers).
KEEP_EPOCHS = 4


class Epochs(CatchUp):
    """The epoch loop: one vote and one consensus per epoch."""

    async def _epoch_loop(self) -> None:
        interval_ms = self.interval_ms
        margin_ms = min(interval_ms // 10, 1000)
        epoch = self.clock() // interval_ms + 1
        while True:
            start_ms = epoch * interval_ms
            await self._sleep_until(start_ms)
            if not self._measured.is_set():
                # Just started: the first round of checks may end before the peers
                # (and our own _run_epoch) want the vote, at vote_delay.
                with trio.move_on_at(
                    self._deadline(start_ms + self.config.effective_vote_delay_ms)
                ):
                    await self._measured.wait()
            if self._measured.is_set():
                try:
                    self.freeze_vote(epoch)
                except ValueError as exc:  # over the vote's size limit: a bug or an attack
                    log_event(log, logging.ERROR, "vote_failed", epoch=epoch, error=str(exc))
            else:
                log_event(
                    log,
                    logging.WARNING,
                    "vote_withheld",
                    epoch=epoch,
                    reason="the first round of liveness checks has not finished",
                )
            await self._save_registry()
            await self._sleep_until(start_ms + self.config.effective_vote_delay_ms)
            with trio.move_on_at(self._deadline(start_ms + interval_ms - margin_ms)):
                await self._run_epoch(epoch)
            self._forget_old(epoch)
            # Normally the next epoch; if this one overran (a suspended machine), the
            # next one that has not begun.
            epoch = max(epoch + 1, self.clock() // interval_ms + 1)

    def freeze_vote(self, epoch: int) -> bytes:
        """Make (and serve) this authority's vote for ``epoch``: its live descriptors.

        The epoch loop calls it only once :attr:`measured` (see :mod:`.liveness`).
        """
        at_ms = epoch * self.interval_ms
        live = self.live_descriptors(at_ms)
        vote = make_vote(
            self.keys,
            [r.raw for r in live],
            epoch=epoch,
            interval_ms=self.interval_ms,
            swarm_size=self.config.swarm_size,
            now_ms=self.clock(),
        )
        self.votes[epoch] = vote
        log_event(log, logging.INFO, "vote_frozen", epoch=epoch, nodes=len(live))
        return vote

    def _forget_old(self, epoch: int) -> None:
        for table in (self.votes, self.documents):
            for old in [e for e in table if e <= epoch - KEEP_EPOCHS]:
                del table[old]

    async def _run_epoch(self, epoch: int) -> None:
        start_ms = epoch * self.interval_ms
        own = self.votes.get(epoch)
        if own is None:
            return
        own_vote = parse_vote(
            own,
            key=self.key,
            epoch=epoch,
            interval_ms=self.interval_ms,
            swarm_size=self.config.swarm_size,
        )
        # The previous consensus and the peers' votes, at the same time and both cut off
        # at twice the vote delay: a peer that hangs must not eat the epoch.
        until_ms = start_ms + 2 * self.config.effective_vote_delay_ms
        votes = [own_vote]
        with trio.move_on_at(self._deadline(until_ms)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._catch_up, epoch - 1)
                nursery.start_soon(self._fetch_votes, epoch, until_ms, votes)
        if len(votes) < self.threshold:
            log_event(
                log,
                logging.WARNING,
                "epoch_skipped",
                epoch=epoch,
                votes=len(votes),
                threshold=self.threshold,
            )
            return
        known = {r.raw: r.descriptor for r in self.registry.values()}
        lists = await trio.to_thread.run_sync(_parse_votes, votes, start_ms, known)
        descriptors = combine_votes(lists, threshold=self.threshold)
        previous = self.latest_verified(before_epoch=epoch)
        try:
            body = make_consensus_body(
                descriptors,
                epoch=epoch,
                valid_after_ms=start_ms,
                interval_ms=self.interval_ms,
                swarm_size=self.config.swarm_size,
                previous=None if previous is None else previous.consensus.assignment,
            )
        except ValueError as exc:
            log_event(log, logging.ERROR, "consensus_failed", epoch=epoch, error=str(exc))
            return
        signature = sign_consensus(body, self.keys)
        doc = HeldConsensus(parse_consensus_body(body), {self.key: signature.signature}, ours=True)
        doc.reassemble()
        self.documents[epoch] = doc
        log_event(
            log,
            logging.INFO,
            "consensus_made",
            epoch=epoch,
            nodes=len(descriptors),
            votes=len(votes),
            previous=None if previous is None else previous.consensus.epoch,
            digest=doc.consensus.digest.hex()[:16],
        )
        await self._after_signatures_changed(doc)
        await self._gather_signatures(epoch, doc)

    async def _fetch_votes(self, epoch: int, until_ms: int, votes: list[Vote]) -> None:
        """Append the peers' votes for ``epoch`` to ``votes``, asking again those that
        have none yet until ``until_ms``."""

        async def fetch(peer: Authority) -> None:
            poll_s = self._poll_s()
            while True:
                vote = await self._fetch_vote(peer, epoch)
                if vote is not None:
                    votes.append(vote)
                    return
                if self.clock() + poll_s * 1000 >= until_ms:
                    return
                await trio.sleep(poll_s)

        async with trio.open_nursery() as nursery:
            for peer in self.peers:
                nursery.start_soon(fetch, peer)

    async def _gather_signatures(self, epoch: int, doc: HeldConsensus) -> None:
        """Fetch the peers' signatures of ``doc`` until all signed (or cancelled).

        Each peer is asked in a loop of its own, and each signature is merged the
        moment it arrives: a peer that is cut off (its requests run into
        ``check_timeout``) must hold back neither the others' signatures nor the next
        question to a peer that had not signed yet, or a network that lost one
        authority could sign nothing above its threshold while it is fresh."""
        poll_s = self._poll_s()
        digest = doc.consensus.digest.hex()
        missing = [p for p in self.peers if p.key not in doc.signatures]
        if not missing:
            return
        send, receive = trio.open_memory_channel[ConsensusSignature](len(missing))

        async def fetch(peer: Authority, send: trio.MemorySendChannel[ConsensusSignature]) -> None:
            async with send:
                while self.documents.get(epoch) is doc:
                    data = await self._get(peer, f"/signature?epoch={epoch}&digest={digest}")
                    if data is not None:
                        try:
                            sig = parse_signature_doc(data, key=peer.key, body=doc.consensus.body)
                        except ProtocolError as exc:
                            log_event(
                                log,
                                logging.WARNING,
                                "signature_refused",
                                peer=peer.label,
                                error=str(exc),
                            )
                        else:
                            await send.send(sig)
                            return
                    await trio.sleep(poll_s)

        async with trio.open_nursery() as nursery:
            async with send:
                for peer in missing:
                    nursery.start_soon(fetch, peer, send.clone())
            async with receive:
                async for sig in receive:
                    if self.documents.get(epoch) is not doc:
                        continue  # superseded: the fetches end at their next question
                    doc.signatures[sig.key] = sig.signature
                    doc.reassemble()
                    log_event(
                        log,
                        logging.INFO,
                        "signatures_added",
                        epoch=epoch,
                        signatures=len(doc.signatures),
                        threshold=self.threshold,
                    )
                    await self._after_signatures_changed(doc)


def _parse_votes(
    votes: list[Vote], valid_after_ms: int, known: Mapping[bytes, NodeDescriptor]
) -> list[list[NodeDescriptor]]:
    """Every vote's descriptors at the epoch's time (in a worker thread: signatures)."""
    lists = []
    for vote in votes:
        descriptors, skipped = vote_descriptors(vote, valid_after_ms=valid_after_ms, known=known)
        if skipped:
            log_event(
                log, logging.WARNING, "vote_descriptors_skipped", vote=repr(vote), skipped=skipped
            )
        lists.append(descriptors)
    return lists
