"""Invitations: how a new member learns its membership chain before it can read.

Design note
-----------
A member signs its requests to the session's swarm with its membership chain, and
that chain is in the session's records. A new member's first retrieve is signed by its
account alone: a node serves it when the session's state it holds has the account as
a live member with read (node/groups.py), so no invitation is needed. Invitations are
the fallback for a node that does not hold the records adding the member yet (a store
not yet replicated to it, a node that lost or never had the session): the adder still
hands the chain over: when it creates a session or adds members, it sends each new
member a 1:1 message (sealed to it, signed by the adder:
:mod:`veil.client.messaging`) holding the session ID and the member's chain::

    b"veil-group-invite/v1\\n" + JSON {"session_id": "03...", "chain": "<base64>"}

The member's client reads its inbox *without consuming it* (raw retrieves: no position
moved, nothing recorded) to find the newest invitation for the session, and signs its
first retrieve with that chain. The receiver (:mod:`veil.client.messaging`) records
invitations but never hands them to the application. An invitation proves nothing by
itself: the nodes check the chain, and the client checks the records it then reads.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

from veil.client.messaging import GROUP_INVITE_PREFIX
from veil.onion.capability import Chain
from veil.onion.errors import ProtocolError, VeilError
from veil.onion.keys import Account, AccountId, GroupId

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = ["INVITE_PREFIX", "find_chain", "invite_content", "is_invite", "parse_invite"]

INVITE_PREFIX = GROUP_INVITE_PREFIX
#: Invitations live as long as a membership link may (30 days) at most; 14 days, as
#: 1:1 messages (the member's first retrieve is expected well within it).
INVITE_TTL_S = 14 * 24 * 3600
#: Inbox pages read while looking for an invitation.
MAX_PAGES = 20


def invite_content(session_id: GroupId, chain: Chain) -> bytes:
    doc = {"session_id": str(session_id), "chain": base64.b64encode(chain.encoded).decode()}
    return INVITE_PREFIX + json.dumps(doc, separators=(",", ":")).encode()


def is_invite(content: bytes) -> bool:
    return content.startswith(INVITE_PREFIX)


def parse_invite(content: bytes) -> tuple[GroupId, Chain] | None:
    """The session and chain an invitation names, or None for anything else."""
    if not is_invite(content):
        return None
    try:
        doc = json.loads(content[len(INVITE_PREFIX) :])
        return GroupId.parse(doc["session_id"]), Chain.decode(base64.b64decode(doc["chain"]))
    except (ValueError, KeyError, TypeError, VeilError):
        return None


async def find_chain(client: VeilClient, account: Account, session_id: GroupId) -> Chain | None:
    """The longest-lived chain an invitation in our inbox gives us for ``session_id``."""
    from veil.onion import rpc
    from veil.onion.envelope import open_envelope

    best: Chain | None = None
    last: bytes | None = None
    for _ in range(MAX_PAGES):
        page = await client.retrieve(rpc.INBOX, last_hash=last)
        for message in page.messages:
            try:
                opened = open_envelope(account, message.data)
            except ProtocolError:
                continue
            found = parse_invite(opened.content)
            if found is None or found[0] != session_id:
                continue
            chain = found[1]
            if chain.owner != session_id or chain.audience != _audience(account.id):
                continue
            if best is None or chain.expires_ms > best.expires_ms:
                best = chain
        if not page.more or not page.messages:
            break
        last = page.messages[-1].hash
    return best


def _audience(account: AccountId) -> bytes:
    """A chain's audience bytes for an account (0x05 + its X25519 key)."""
    return b"\x05" + account.x25519_public
