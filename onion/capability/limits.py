"""The constants of delegated keys: sizes, counts, times, signature domains, hash purposes.

Design note
-----------
Constants only, read by every other module of :mod:`veil.onion.capability`. Every bound
exists so that a node refuses hostile input after a bounded amount of work: the byte
limits are checked before a byte is parsed, the link count before a link is decoded,
and the per-link counts by the schema before anything is compared or verified.

This package imports nothing of :mod:`veil.onion.rpc` (whose signing module will import
it: a circle otherwise), so the two numbers it shares with the storage RPC, the
namespace range and the default clock skew, are written here too;
tests/test_capability.py checks that they agree with :mod:`veil.onion.rpc.limits`.
"""

from __future__ import annotations

from typing import Final

VERSION: Final = 1

#: Links in a chain, the account's first: enough for forwarding chains in groups.
MAX_CHAIN_LINKS: Final = 8
#: Resources in one link.
MAX_RESOURCES: Final = 16
#: Characters of a link's optional human-readable statement (CACAO's ``statement``).
MAX_STATEMENT: Final = 256
#: Bytes of one encoded link. The largest a link can be under the counts above is about
#: 3,000 bytes (16 resources of 7 actions, a statement of 256 four-byte characters).
MAX_LINK_SIZE: Final = 4096
#: Bytes of one encoded chain (a request carries it). A typical chain of one or two
#: links is 250 to 600 bytes; eight links of the largest size do not fit, on purpose.
MAX_CHAIN_SIZE: Final = 16_384
#: Bytes of one encoded revocation record (its proof chain and authority chain included).
MAX_REVOCATION_SIZE: Final = 2 * MAX_CHAIN_SIZE + 512
#: Characters of a serialized session (prefix + base64url of at most MAX_CHAIN_SIZE + 128).
MAX_SESSION_CHARS: Final = 32 + (MAX_CHAIN_SIZE + 128) * 4 // 3 + 4

NONCE_BYTES: Final = 16
KEY_BYTES: Final = 32
#: An account audience on the wire: 0x05, then the account's X25519 key.
ACCOUNT_AUDIENCE_BYTES: Final = 33
ACCOUNT_AUDIENCE_PREFIX: Final = b"\x05"
#: An owner on the wire: its ID's prefix byte (0x05 account, 0x03 group) + its 32-byte key.
OWNER_BYTES: Final = 33

DAY_MS: Final = 86_400_000
#: Lifetime of a capability when the issuer names none (DIDSession's default).
DEFAULT_LIFETIME_MS: Final = 7 * DAY_MS
#: The longest a link may live (expiry - issued-at): as long as a message in a private
#: namespace, so that a revocation record, which lives until the revoked link expires,
#: is stored no longer than any other message of the account's swarm.
MAX_LIFETIME_MS: Final = 30 * DAY_MS
#: Largest time in ms (CBOR's signed 64-bit range, as the storage RPC's).
MAX_TIME_MS: Final = 2**63 - 1
#: The storage RPC's clock skew (veil.onion.rpc.limits.CLOCK_SKEW_MS).
DEFAULT_SKEW_MS: Final = 60_000

#: The storage RPC's namespace range (veil.onion.rpc.limits).
NAMESPACE_MIN: Final = -32768
NAMESPACE_MAX: Final = 32767

#: Signature domains (crypto.sign prefixes them with ``veil/`` and ends them with NUL).
LINK_DOMAIN: Final = b"capability/v1"
REVOCATION_DOMAIN: Final = b"cap-revoke/v1"

#: BLAKE2b ``person`` of the digests (at most 16 bytes each).
LINK_DIGEST_PURPOSE: Final = b"veil/cap-link"
CHAIN_DIGEST_PURPOSE: Final = b"veil/cap-chain"
REVOCATION_DIGEST_PURPOSE: Final = b"veil/cap-revoke"
