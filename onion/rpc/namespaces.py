"""Namespace policy: who may store into and read from a namespace, and for how long.

Design note
-----------
A namespace is an int in [-32768, 32767]: ``0`` is the inbox (anyone stores, unsigned;
only the owner reads), ``1 ..`` are private (the owner alone), ``.. -1`` are public-read
(the owner stores, anyone reads unsigned). The sign bit is the whole rule, which is hard
to get wrong, and the default direction (positive) is the private one, so a mistaken
namespace number never publishes anything. These functions are the only place the rule
is written; the request types, the node and the client all ask them.

One public-read namespace is special: :data:`~.limits.ROOM_NAMESPACE` (-2), every
account's *room* (open groups, issue 16). Anyone reads it unsigned, as any public-read
namespace, and anyone stores into it *unsigned* too, as into the inbox: each message is
exactly one room record (:mod:`veil.onion.room`), signed by its author (or the owner, or
a moderator), which the node judges against the room's records before it stores it
(:func:`is_room`; node/rooms/), so the store request needs no signature of its own and
a replicated copy carries no owner's proof (the record is its own). Its TTL is the
longest (30 days), as where only the owner writes: the owner's metadata and bans live
in it, and the node bounds what others store there by the room's rules. An owner's
``delete``, ``delete_all`` or ``expire`` of it is refused by nodes: a room's records go
by its moderation records or their TTL.

A TTL outside :data:`~veil.onion.rpc.limits.MIN_TTL_MS` ..
:func:`max_ttl_ms` is refused with a typed error: :class:`~veil.onion.errors.BadTtl`
(a :class:`~veil.onion.errors.SchemaError`) for one read from the wire,
:class:`~veil.onion.errors.InvalidTtl` (also a :class:`ValueError`) for one a caller
passes to a builder (:func:`check_ttl_ms`).
"""

from __future__ import annotations

from ..errors import InvalidTtl
from .limits import INBOX, MAX_TTL_MS, MAX_TTL_PRIVATE_MS, MIN_TTL_MS, ROOM_NAMESPACE


def is_public_read(namespace: int) -> bool:
    """Namespaces that anyone may read (channel posts, rooms): the negative ones."""
    return namespace < 0


def is_room(namespace: int) -> bool:
    """The room namespace (-2): every message is one room record, judged by the node."""
    return namespace == ROOM_NAMESPACE


def store_needs_auth(namespace: int) -> bool:
    """Storing is signed by the owner everywhere but in the inbox and the room namespace
    (whose records are signed themselves)."""
    return namespace != INBOX and namespace != ROOM_NAMESPACE


def read_needs_auth(namespace: int) -> bool:
    """Retrieving is signed by the owner everywhere but in public-read namespaces."""
    return not is_public_read(namespace)


def max_ttl_ms(namespace: int) -> int:
    """14 days in the inbox (anyone writes), 30 days where only the owner writes and in
    the room namespace (see the module note)."""
    return MAX_TTL_MS if namespace == INBOX else MAX_TTL_PRIVATE_MS


def ttl_problem(ttl_ms: object, namespace: int) -> str | None:
    """What is wrong with ``ttl_ms`` in ``namespace`` (None if nothing): the one TTL rule,
    worded for both the wire error and the local one."""
    if type(ttl_ms) is not int:
        return f"expected an integer TTL in ms, not {type(ttl_ms).__name__}"
    if ttl_ms < MIN_TTL_MS:
        return f"{ttl_ms} is below the minimum {MIN_TTL_MS}"
    limit = max_ttl_ms(namespace)
    if ttl_ms > limit:
        return f"{ttl_ms} is above the maximum {limit} of namespace {namespace}"
    return None


def check_ttl_ms(ttl_ms: int, namespace: int = INBOX) -> int:
    """``ttl_ms`` if it is a TTL ``namespace`` accepts; :class:`InvalidTtl` (a
    :class:`ValueError`) if not. For callers checking their own input before building a
    request (a node refuses the same TTLs with :class:`~veil.onion.errors.BadTtl`)."""
    problem = ttl_problem(ttl_ms, namespace)
    if problem is not None:
        raise InvalidTtl(f"ttl_ms: {problem}")
    return ttl_ms
