"""The four kinds of replication frame, opened, and the seal/open pair of each.

Design note
-----------
push and pushed, pull and page, forward and forwarded (the kinds in the package
note): each ``seal_*`` frames its fields (checked against the schema before sending: a
node never sends what a peer would refuse) and each ``open_*`` gives a typed object.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from veil.onion.errors import ProtocolError
from veil.onion.keys import NodeKeys
from veil.onion.replica import ReplicaMessage, ReplicaPage, SummaryEntry

from .format import _NONCE_BYTES, BATCH_MAX_BYTES, CLOCK_SKEW_MS, MAX_SUMMARY
from .sealing import (
    PeerLookup,
    _check_batch,
    _message_wire,
    _messages,
    _open,
    _open_reply,
    _seal,
)

__all__ = [
    "Forward",
    "Peer",
    "Pull",
    "Push",
    "PushAck",
    "open_forward",
    "open_forwarded",
    "open_page",
    "open_pull",
    "open_push",
    "open_pushed",
    "seal_forward",
    "seal_forwarded",
    "seal_page",
    "seal_pull",
    "seal_push",
    "seal_pushed",
]


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a frame: its node ID and onion key (a ConsensusNode fits too)."""

    node_id: bytes
    onion_key: bytes


@dataclass(frozen=True, slots=True)
class Push:
    """A push, opened: who sent it, its messages (shape-checked only), its digest, and
    its time ``t`` (for the replay guard)."""

    sender: bytes
    messages: list[ReplicaMessage]
    digest: bytes
    sent_ms: int = 0


@dataclass(frozen=True, slots=True)
class PushAck:
    """The answer to a push: how many messages were new there, and which (by hash) the
    receiver refused because their account is not in its swarm."""

    stored: int
    refused: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class Forward:
    """A forwarded client request, opened: who forwards it, the request, its digest."""

    sender: bytes
    request: bytes
    digest: bytes
    sent_ms: int = 0


@dataclass(frozen=True, slots=True)
class Pull:
    """A pull, opened: who asks, for the rows after which seq, for which range of
    accounts as the asker sees it (``scope``), and its digest."""

    sender: bytes
    after: int
    scope: bytes
    digest: bytes
    sent_ms: int = 0
    #: True: a pull of the signed deletions kept there, not of its rows.
    deletions: bool = False
    #: True: a pull of the revocation records kept there.
    revocations: bool = False
    #: True: a pull of a summary of the rows (version 5), not of the rows.
    summary: bool = False


def seal_push(
    keys: NodeKeys, peer: Any, messages: Sequence[ReplicaMessage], *, now_ms: int
) -> tuple[bytes, bytes]:
    """A push of ``messages`` to ``peer``: (frame, digest to check the reply with).

    :class:`ValueError` if the batch is over the limits (the caller cuts batches with
    :func:`batch_cost`).
    """
    _check_batch(messages)
    nonce = os.urandom(_NONCE_BYTES)
    return _seal(
        keys, peer, "push", {"n": nonce, "messages": [_message_wire(m) for m in messages]}, now_ms
    )


def open_push(
    frame: bytes, keys: NodeKeys, lookup: PeerLookup, *, now_ms: int, skew_ms: int = CLOCK_SKEW_MS
) -> Push:
    """Open a push sent to us by a node that ``lookup`` knows (see the module note)."""
    sender, body, digest = _open(frame, keys, lookup, "push", now_ms=now_ms, skew_ms=skew_ms)
    return Push(sender.node_id, _messages(body["messages"]), digest, body["t"])


def seal_pushed(
    keys: NodeKeys, peer: Any, digest: bytes, stored: int, refused: Sequence[bytes], *, now_ms: int
) -> bytes:
    """The answer to a push whose digest is ``digest``."""
    return _seal(
        keys, peer, "pushed", {"re": digest, "stored": stored, "refused": list(refused)}, now_ms
    )[0]


def open_pushed(
    frame: bytes,
    keys: NodeKeys,
    peer: Any,
    digest: bytes,
    *,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
) -> PushAck:
    """Open ``peer``'s answer to our push ``digest``."""
    body = _open_reply(frame, keys, peer, "pushed", digest, now_ms, skew_ms)
    return PushAck(body["stored"], frozenset(body["refused"]))


def seal_pull(
    keys: NodeKeys,
    peer: Any,
    after: int,
    scope: bytes,
    *,
    now_ms: int,
    deletions: bool = False,
    revocations: bool = False,
    summary: bool = False,
) -> tuple[bytes, bytes]:
    """A pull of ``peer``'s rows (``deletions``: of the signed deletions it keeps;
    ``revocations``: of its revocation records; ``summary``: of a summary of its rows)
    after seq ``after`` for the accounts of ``scope`` (see node/replication/):
    (frame, digest)."""
    if deletions + revocations + summary > 1:
        raise ValueError("a pull asks for one of deletions, revocations or a summary")
    fields: dict[str, Any] = {"n": os.urandom(_NONCE_BYTES), "after": after, "scope": scope}
    if deletions:
        fields["what"] = "deletions"
    elif revocations:
        fields["what"] = "revocations"
    elif summary:
        fields["what"] = "summary"
    return _seal(keys, peer, "pull", fields, now_ms)


def open_pull(
    frame: bytes, keys: NodeKeys, lookup: PeerLookup, *, now_ms: int, skew_ms: int = CLOCK_SKEW_MS
) -> Pull:
    sender, body, digest = _open(frame, keys, lookup, "pull", now_ms=now_ms, skew_ms=skew_ms)
    what = body.get("what")
    return Pull(
        sender.node_id,
        body["after"],
        body["scope"],
        digest,
        body["t"],
        deletions=what == "deletions",
        revocations=what == "revocations",
        summary=what == "summary",
    )


def seal_page(keys: NodeKeys, peer: Any, digest: bytes, page: ReplicaPage, *, now_ms: int) -> bytes:
    """The answer to a pull: one page of rows."""
    _check_batch(page.messages)
    fields: dict[str, Any] = {
        "re": digest,
        "messages": [_message_wire(m) for m in page.messages],
        "next": page.next_seq,
        "more": page.more,
    }
    if page.deletes:
        if page.messages or page.revocations or _deletes_too_large(page.deletes):
            raise ValueError("a page of deletions carries no messages, within the batch limits")
        fields["deletes"] = list(page.deletes)
    if page.revocations:
        if page.messages or _deletes_too_large(page.revocations):
            raise ValueError("a page of revocations carries no messages, within the batch limits")
        fields["revocations"] = list(page.revocations)
    if page.summary:
        if page.messages or page.deletes or page.revocations or len(page.summary) > MAX_SUMMARY:
            raise ValueError("a page of a summary carries nothing else, within its limit")
        fields["summary"] = [
            {"s": e.start, "a": e.account, "ns": e.namespace, "h": e.hash, "exp": e.expiry_ms}
            for e in page.summary
        ]
    return _seal(keys, peer, "page", fields, now_ms)[0]


def _deletes_too_large(deletes: Sequence[bytes]) -> bool:
    return len(deletes) > 1 and sum(len(d) for d in deletes) > BATCH_MAX_BYTES


def open_page(
    frame: bytes,
    keys: NodeKeys,
    peer: Any,
    digest: bytes,
    *,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
) -> ReplicaPage:
    """Open ``peer``'s answer to our pull ``digest``."""
    body = _open_reply(frame, keys, peer, "page", digest, now_ms, skew_ms)
    deletes = tuple(body.get("deletes", ()))
    revocations = tuple(body.get("revocations", ()))
    if deletes and (body["messages"] or revocations or _deletes_too_large(deletes)):
        raise ProtocolError("a page of deletions carries no messages, within the batch limits")
    if revocations and (body["messages"] or _deletes_too_large(revocations)):
        raise ProtocolError("a page of revocations carries no messages, within the batch limits")
    summary = tuple(
        SummaryEntry(e["s"], e["a"], e["ns"], e["h"], e["exp"]) for e in body.get("summary", ())
    )
    if summary and (body["messages"] or deletes or revocations):
        raise ProtocolError("a page of a summary carries nothing else")
    if any(e.start >= body["next"] for e in summary) or any(
        b.start < a.start for a, b in itertools.pairwise(summary)
    ):
        raise ProtocolError("a summary's starts go back, or reach past its next seq")
    return ReplicaPage(
        _messages(body["messages"]), body["next"], body["more"], deletes, revocations, summary
    )


def seal_forward(keys: NodeKeys, peer: Any, request: bytes, *, now_ms: int) -> tuple[bytes, bytes]:
    """Forward a client's signed storage request (a delete, delete_all or expire that
    this node executed) to ``peer``: (frame, digest)."""
    fields = {"n": os.urandom(_NONCE_BYTES), "request": request}
    return _seal(keys, peer, "forward", fields, now_ms)


def open_forward(
    frame: bytes, keys: NodeKeys, lookup: PeerLookup, *, now_ms: int, skew_ms: int = CLOCK_SKEW_MS
) -> Forward:
    sender, body, digest = _open(frame, keys, lookup, "forward", now_ms=now_ms, skew_ms=skew_ms)
    return Forward(sender.node_id, body["request"], digest, body["t"])


def seal_forwarded(keys: NodeKeys, peer: Any, digest: bytes, reply: bytes, *, now_ms: int) -> bytes:
    """The answer to a forward: the storage reply the request got here."""
    return _seal(keys, peer, "forwarded", {"re": digest, "reply": reply}, now_ms)[0]


def open_forwarded(
    frame: bytes,
    keys: NodeKeys,
    peer: Any,
    digest: bytes,
    *,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
) -> bytes:
    """``peer``'s storage reply to our forward ``digest``."""
    return bytes(_open_reply(frame, keys, peer, "forwarded", digest, now_ms, skew_ms)["reply"])
