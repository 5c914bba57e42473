"""A token bucket per client address, in a table of bounded size.

Design note
-----------
Each address has a bucket of ``burst`` tokens that refills at ``rate`` tokens a second;
a request takes one token or is refused at once (the caller answers 429: a request over
the limit is never queued, since a queue is memory the client controls). Buckets live in
an ordered dict used as an LRU: a lookup moves the bucket to the end, and when the table
holds ``max_entries`` buckets the least recently seen address is dropped. An evicted
address comes back with a full bucket, which is the same as an address that waited long
enough to refill, so eviction never refuses anyone; the bound only decides how much a
flood of distinct addresses can cost (two floats per address).

IPv6 clients get a fresh address cheaply, so an IPv6 address is bucketed by its /64
(one customer's subnet in practice); IPv4 by the full address.

Sans-IO: the caller passes the time (seconds, any monotonic clock).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable, Iterable

__all__ = ["TokenBucketLimiter", "client_key"]


def peer_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` (a connecting address, or a host from the consensus) as an IP, an
    IPv4-mapped IPv6 address as its IPv4 one and a zone (``%eth0``) dropped; None if it
    is not an IP address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_key(address: str) -> str:
    """The bucket key of an address: IPv4 as is, IPv6 by its /64 prefix."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class TokenBucketLimiter:
    """Token buckets by key: :meth:`allow` says whether a request may go ahead now."""

    __slots__ = ("_buckets", "_exempt", "burst", "max_entries", "rate")

    def __init__(
        self,
        rate: float,
        burst: float,
        max_entries: int,
        exempt: Iterable[str] = (),
    ) -> None:
        """``rate`` tokens a second (0: no limit), ``burst`` tokens at most per bucket.

        ``exempt`` lists networks (``"127.0.0.0/8"``) whose addresses are never limited.
        """
        # ValueError: a bug in the caller (config.py checks what an operator sets).
        if rate < 0 or burst < 1 or max_entries < 1:
            raise ValueError("rate >= 0, burst >= 1 and max_entries >= 1")
        self.rate = rate
        self.burst = burst
        self.max_entries = max_entries
        self._exempt = tuple(ipaddress.ip_network(n, strict=False) for n in exempt)
        # key -> [tokens, time of last update]
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def is_exempt(self, address: str) -> bool:
        """True if ``address`` is in an exempt network (or limiting is off)."""
        if self.rate == 0:
            return True
        if not self._exempt:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self._exempt)

    def allow(self, key: Hashable, now: float) -> bool:
        """Take a token from ``key``'s bucket; False if it is empty (refuse the request).

        ``key`` is usually :func:`client_key` of the peer address (the storage service
        uses an account's key bytes); a new key, or one evicted and back, starts with a
        full bucket. Callers ask :meth:`is_exempt` only of a key over its limit.
        """
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_entries:
                buckets.popitem(last=False)
            buckets[key] = [self.burst - 1.0, now]
            return True
        buckets.move_to_end(key)
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
