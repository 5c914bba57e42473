"""Replication's counters and the metrics read from them at scrape time.

Design note
-----------
Every part of replication (push queues, receiving, pulls, handover) counts into one
:class:`ReplicationCounters`, owned by the :class:`~veil.node.replication.Replicator`;
:func:`replication_figures` turns them into the ``veil_replication_*`` metrics
(node/metrics.py), read at scrape time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..metrics import StorageFigure

__all__ = ["ReplicationCounters", "replication_figures"]


@dataclass(slots=True)
class ReplicationCounters:
    """Counters for metrics; read them, do not write them."""

    #: Messages a swarm peer acknowledged (push).
    pushed: int = 0
    #: Push requests that failed (unreachable, timeout, refused, bad answer).
    push_failures: int = 0
    #: Messages dropped from a peer's queue (full, gave up, peer left the swarm).
    push_dropped: int = 0
    #: Messages received by push that were new here.
    received: int = 0
    #: Pull requests made, and those that failed.
    pulls: int = 0
    pull_failures: int = 0
    #: Messages received by pull that were new here.
    pulled: int = 0
    #: Rows named in peers' summaries that were held here (not pulled: issue 17).
    summary_held: int = 0
    #: Messages of pulled pages dropped because they break a rule (a proof that fails),
    #: and pulled deletions dropped (not the owner's signed delete).
    pull_refused: int = 0
    #: Messages deleted here by a deletion pulled from a peer (one this node missed).
    deletions_applied: int = 0
    #: Revocation records pulled from a peer that were new here (missed here).
    revocations_pulled: int = 0
    #: Revocation records handed over to an account's new swarm (acked by a member).
    revocations_handed_over: int = 0
    #: Messages handed over to another swarm (and deleted here).
    handed_over: int = 0
    #: Handover pushes that failed or were refused.
    handover_failures: int = 0
    #: Client deletes and expiries forwarded to a peer, and forwards that failed.
    forwarded: int = 0
    forward_failures: int = 0
    #: Replication requests from peers refused, by wire status.
    refused: dict[str, int] = field(default_factory=dict)


def replication_figures(c: ReplicationCounters, queued: int) -> list[StorageFigure]:
    """The replication metrics; ``queued`` is the messages queued for swarm peers now."""

    def counter(name: str, doc: str, value: float) -> StorageFigure:
        return StorageFigure(name, doc, "counter", {(): value})

    return [
        counter("veil_replication_pushed", "Messages acknowledged by swarm peers", c.pushed),
        counter("veil_replication_push_failures", "Push requests that failed", c.push_failures),
        counter(
            "veil_replication_push_dropped",
            "Messages dropped from a peer's queue (peers catch up by pulling)",
            c.push_dropped,
        ),
        counter("veil_replication_received", "New messages received by push", c.received),
        counter("veil_replication_pulls", "Pull requests made to swarm peers", c.pulls),
        counter("veil_replication_pull_failures", "Pull requests that failed", c.pull_failures),
        counter("veil_replication_pulled", "New messages received by pull", c.pulled),
        counter(
            "veil_replication_summary_held",
            "Rows named in swarm peers' summaries that were held here, so not pulled",
            c.summary_held,
        ),
        counter(
            "veil_replication_deletions_applied",
            "Messages deleted by an owner's delete pulled from a peer (missed here)",
            c.deletions_applied,
        ),
        counter(
            "veil_replication_revocations_pulled",
            "Revocations of delegated keys pulled from a peer (missed here)",
            c.revocations_pulled,
        ),
        counter(
            "veil_replication_pull_refused",
            "Messages of pulled pages dropped for breaking a rule (e.g. a bad owner proof)",
            c.pull_refused,
        ),
        counter(
            "veil_replication_handed_over",
            "Messages handed over to another swarm and deleted here",
            c.handed_over,
        ),
        counter(
            "veil_replication_revocations_handed_over",
            "Revocations of delegated keys sent to an account's new swarm",
            c.revocations_handed_over,
        ),
        counter(
            "veil_replication_handover_failures",
            "Handover pushes that failed",
            c.handover_failures,
        ),
        counter(
            "veil_replication_forwarded",
            "Client deletes and expiries forwarded to a swarm peer",
            c.forwarded,
        ),
        counter(
            "veil_replication_forward_failures",
            "Forwards of client deletes and expiries that failed",
            c.forward_failures,
        ),
        StorageFigure(
            "veil_replication_refused",
            "Replication requests from peers refused, by status",
            "counter",
            {(status,): float(n) for status, n in c.refused.items()},
            ("status",),
        ),
        StorageFigure(
            "veil_replication_queued", "Messages queued for swarm peers", "gauge", {(): queued}
        ),
    ]
