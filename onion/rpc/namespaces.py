"""Namespace policy: who may store into and read from a namespace, and for how long.

Design note
-----------
A namespace is an int in [-32768, 32767]: ``0`` is the inbox (anyone stores, unsigned;
only the owner reads), ``1 ..`` are private (the owner alone), ``.. -1`` are public-read
(the owner stores, anyone reads unsigned). The sign bit is the whole rule, which is hard
to get wrong, and the default direction (positive) is the private one, so a mistaken
namespace number never publishes anything. These four functions are the only place the
rule is written; the request types, the node and the client all ask them.

A TTL outside :data:`~veil.onion.rpc.limits.MIN_TTL_MS` ..
:func:`max_ttl_ms` is refused with a typed error: :class:`~veil.onion.errors.BadTtl`
(a :class:`~veil.onion.errors.SchemaError`) for one read from the wire,
:class:`~veil.onion.errors.InvalidTtl` (also a :class:`ValueError`) for one a caller
passes to a builder (:func:`check_ttl_ms`).
"""

from __future__ import annotations

from ..errors import InvalidTtl
from .limits import INBOX, MAX_TTL_MS, MAX_TTL_PRIVATE_MS, MIN_TTL_MS


def is_public_read(namespace: int) -> bool:
    """Namespaces that anyone may read (channel posts): the negative ones."""
    return namespace < 0


def store_needs_auth(namespace: int) -> bool:
    """Storing is signed by the owner everywhere but in the inbox."""
    return namespace != INBOX


def read_needs_auth(namespace: int) -> bool:
    """Retrieving is signed by the owner everywhere but in public-read namespaces."""
    return not is_public_read(namespace)


def max_ttl_ms(namespace: int) -> int:
    """14 days in the inbox (anyone writes), 30 days where only the owner writes."""
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
