"""Catching up: agreeing with the peers on a consensus, and learning the nodes they know.

Design note
-----------
Two uses, one merge rule (:meth:`CatchUp.merge_document`): a consensus document from a
peer adds its valid pinned signatures to the same body held for its epoch, or replaces
what is held if a threshold of pinned authorities signed it and the body held has fewer
signatures (two bodies that both reached the threshold: the one held stays, logged).

* Every epoch, after ``vote_delay``, :mod:`.epochs` merges the peers' consensus of the
  previous epoch, so that all authorities agree on it: the next consensus keeps its
  swarm assignment (sticky swarms, :mod:`veil.onion.swarm`).
* At start (:meth:`CatchUp._catch_up_at_start`), a restarted authority asks its peers
  for their latest consensus and vote: from the vote it learns (and checks) the nodes
  it lacks, so it votes for them once they answer. With its saved files
  (:mod:`.saved`), a restart loses nothing; it votes from the first epoch that begins
  (or reaches ``vote_delay``) after its first round of checks (:mod:`.liveness`).
"""

from __future__ import annotations

import logging

import trio

from veil.onion.directory import (
    Authority,
    parse_consensus_body,
    parse_descriptor,
    split_consensus,
)
from veil.onion.errors import ProtocolError

from ..logging import log_event
from .saved import Saved, pinned_signatures
from .state import HeldConsensus

__all__ = ["CatchUp"]

log = logging.getLogger("veil.authority")


class CatchUp(Saved):
    """Merging the peers' consensus documents, and importing the nodes of their votes."""

    async def _catch_up(self, epoch: int | None) -> None:
        """Merge the peers' consensus of ``epoch`` (None: their latest) into ours."""
        held = None if epoch is None else self.documents.get(epoch)
        if held is not None and len(held.signatures) >= self.threshold:
            return  # already good enough to build on
        path = "/consensus" if epoch is None else f"/consensus?epoch={epoch}"
        results: list[bytes] = []

        async def fetch(peer: Authority) -> None:
            data = await self._get(peer, path)
            if data is not None:
                results.append(data)

        async with trio.open_nursery() as nursery:
            for peer in self.peers:
                nursery.start_soon(fetch, peer)
        for data in results:
            await self.merge_document(data)

    async def merge_document(self, data: bytes) -> bool:
        """Merge a consensus document from a peer (or our saved file): add its valid
        pinned signatures to the same body held, or adopt it if a threshold signed it
        and the body held for its epoch (if any) has fewer. True if anything changed."""
        try:
            body, signatures = split_consensus(data)
            consensus = await trio.to_thread.run_sync(parse_consensus_body, body)
        except ProtocolError as exc:
            log_event(log, logging.WARNING, "consensus_refused", error=str(exc))
            return False
        valid = pinned_signatures(body, signatures, self.network.pinned_keys)
        epoch = consensus.epoch
        held = self.documents.get(epoch)
        if held is not None and held.consensus.body == body:
            new = {k: s for k, s in valid.items() if k not in held.signatures}
            if not new:
                return False
            held.signatures.update(new)
            held.reassemble()
            await self._after_signatures_changed(held)
            return True
        if len(valid) < self.threshold:
            return False
        if held is not None and len(held.signatures) >= self.threshold:
            log_event(log, logging.WARNING, "conflicting_consensus", epoch=epoch)
            return False
        doc = HeldConsensus(consensus, valid)
        doc.reassemble()
        self.documents[epoch] = doc
        log_event(log, logging.INFO, "consensus_adopted", epoch=epoch, signatures=len(valid))
        await self._after_signatures_changed(doc)
        return True

    async def _catch_up_at_start(self) -> None:
        """Learn the peers' latest consensus and the descriptors their votes hold."""
        await self._catch_up(None)

        async def import_vote(peer: Authority) -> None:
            vote = await self._fetch_vote(peer, None)
            if vote is None:
                return
            added = 0
            now_ms = self.clock()
            for raw in vote.descriptors:
                try:
                    descriptor = parse_descriptor(raw, now_ms=now_ms)
                except ProtocolError:
                    continue
                if (
                    descriptor.node_id not in self.registry
                    and self.register(descriptor, raw).status == 200
                ):
                    added += 1
                await trio.lowlevel.checkpoint()
            if added:
                log_event(log, logging.INFO, "descriptors_imported", peer=peer.label, nodes=added)

        async with trio.open_nursery() as nursery:
            for peer in self.peers:
                nursery.start_soon(import_vote, peer)
