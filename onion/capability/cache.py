"""A bounded cache of verified chains, so that a delegated request costs about what an
owner-signed one does.

Design note
-----------
A node sees the same chain on every request of a session key (a worker polling an
inbox sends it each time). :class:`ChainCache` keeps what each chain proved
(:class:`~veil.onion.capability.chains.Proven`) under
:func:`~veil.onion.capability.chains.chain_digest` of its bytes, which is computed
without parsing (one BLAKE2b pass over at most 16 KiB). On a hit it repeats only
:meth:`Proven.check`: the times (against the caller's clock), the request (signer,
account, action and namespace) and the revocations; on a miss it runs every check of
:func:`~veil.onion.capability.chains.authorize`, cheapest first, and keeps the result
once the signatures have verified, before the revocation check (a revoked chain is kept
too: every use of it asks the revocations again, and it costs no more signatures).

Bounds: at most ``max_entries`` chains (least recently used dropped first), each a few
hundred bytes. Only chains whose every signature verified are kept, so filling the
cache takes an attacker one signature per entry (an account is free, so it can be
done); the worst it does is evict honest entries, which are then verified again (up to
8 signature checks, the cost without a cache). A chain that fails a cheap check (size,
format, structure, times, the request) costs no signature and is never kept.

Sans-IO and not thread-safe: the node calls it from its trio thread only.
"""

from __future__ import annotations

from collections import OrderedDict

from ..errors import CapabilityTooLarge, MalformedCapability
from .chains import (
    Chain,
    Proven,
    RevocationLookup,
    _check_request,
    _check_revoked,
    _check_structure,
    _check_times,
    _proven,
    chain_digest,
)
from .limits import DEFAULT_SKEW_MS, MAX_CHAIN_SIZE
from .resources import Owner

__all__ = ["ChainCache"]


class ChainCache:
    """Verified chains by digest (see the module note)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, Proven] = OrderedDict()
        #: Requests answered from the cache, and chains verified in full.
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def authorize(
        self,
        chain: bytes,
        *,
        signer: bytes,
        account: Owner,
        method: str,
        namespace: int | None,
        now_ms: int,
        skew_ms: int = DEFAULT_SKEW_MS,
        is_revoked: RevocationLookup | None = None,
    ) -> Proven:
        """:func:`~veil.onion.capability.chains.authorize`, with the cache: the same
        result and the same typed errors."""
        if type(chain) is not bytes:
            raise MalformedCapability("a chain is a byte string")
        if len(chain) > MAX_CHAIN_SIZE:
            raise CapabilityTooLarge(
                f"a chain of {len(chain)} bytes is over the limit of {MAX_CHAIN_SIZE}"
            )
        digest = chain_digest(chain)
        proven = self._entries.get(digest)
        if proven is not None:
            self._entries.move_to_end(digest)
            self.hits += 1
            proven.check(
                signer=signer,
                account=account,
                method=method,
                namespace=namespace,
                now_ms=now_ms,
                skew_ms=skew_ms,
                is_revoked=is_revoked,
            )
            return proven
        decoded = Chain.decode(chain)
        links = decoded.links
        _check_structure(links)
        _check_times(links, now_ms, skew_ms)
        _check_request(
            decoded.owner,
            decoded.audience,
            decoded.resources,
            signer,
            account,
            method,
            namespace,
        )
        decoded.verify_signatures()
        self.misses += 1
        proven = _proven(decoded)
        self._entries[digest] = proven
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        _check_revoked(proven.link_digests, is_revoked)
        return proven

    def clear(self) -> None:
        self._entries.clear()
