"""Node descriptors: what a node says about itself, signed by its identity key.

Design note
-----------
Wire format (signed by the node's identity key, domain ``b"descriptor"``)::

    {"body": bytes, "sig": bytes(64)}
    body = {"v": 1, "id": Ed25519 identity key (32), "onion": X25519 onion key (32),
            "host": IP literal, "port": 1..65535, "version": str (<= 64 printable ASCII),
            "published": ms, "expires": ms}

A descriptor is refused, in this order: over :data:`MAX_DESCRIPTOR_SIZE` (TooLarge,
before decoding); not strict canonical CBOR of that shape (DecodeError, SchemaError); an
identity key that is not a valid Ed25519 point (InvalidId, as
:func:`veil.onion.keys.parse_node_id`); a signature that does not verify
(BadSignature); an onion key that is not a valid X25519 key, a host that is not a
canonical IP literal, a bad version string, an expiry not after publication or a
lifetime over :data:`MAX_DESCRIPTOR_LIFETIME_MS` (InvalidDescriptor); published more
than the clock skew ahead of us (FutureDescriptor); expired (ExpiredDescriptor).

Both keys are checked as curve points here, where a key enters the network, so that a
consensus need only check lengths (see :mod:`veil.onion.directory.consensus`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .. import crypto
from ..cbor import Field, Schema, encode
from ..errors import ExpiredDescriptor, FutureDescriptor, InvalidDescriptor, InvalidId
from ..keys import NodeKeys, is_valid_x25519_public, parse_node_id
from .fields import (
    CLOCK_SKEW_MS,
    FORMAT_FIELD,
    FORMAT_VERSION,
    HOST_FIELD,
    KEY_FIELD,
    MAX_TIME_MS,
    PORT_FIELD,
    SIG_FIELD,
    TIME_FIELD,
    VERSION_FIELD,
    check_host,
    check_port,
    check_time,
    check_version,
)

DESCRIPTOR_DOMAIN: Final = b"descriptor"
#: Largest signed descriptor (a full one is under 300 bytes).
MAX_DESCRIPTOR_SIZE: Final = 1024
#: How long a descriptor lives by default; a node republishes well before.
DEFAULT_DESCRIPTOR_LIFETIME_MS: Final = 3 * 3600 * 1000
#: A descriptor claiming to live longer is refused: a stolen or stale one would linger.
MAX_DESCRIPTOR_LIFETIME_MS: Final = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class NodeDescriptor:
    """What a node says about itself, signed by its identity key.

    Building one checks every field, including that both keys are valid points:
    :class:`~veil.onion.errors.InvalidId` for the identity key, :class:`InvalidDescriptor`
    for anything else.
    """

    node_id: bytes  # Ed25519 identity public key
    onion_key: bytes  # X25519 public key that onion layers are built to
    host: str
    port: int
    version: str
    published_ms: int
    expires_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, bytes) or not crypto.ed25519_is_valid_point(self.node_id):
            raise InvalidId("descriptor: node ID is not a valid Ed25519 key")
        if not isinstance(self.onion_key, bytes) or not is_valid_x25519_public(self.onion_key):
            raise InvalidDescriptor("descriptor: onion key is not a valid X25519 key")
        check_host(self.host, InvalidDescriptor)
        check_port(self.port, InvalidDescriptor)
        check_version(self.version, InvalidDescriptor)
        for name in ("published_ms", "expires_ms"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_TIME_MS:
                raise InvalidDescriptor(f"descriptor: {name} is not a time in ms")
        lifetime = self.expires_ms - self.published_ms
        if lifetime <= 0:
            raise InvalidDescriptor("descriptor: expires before it is published")
        if lifetime > MAX_DESCRIPTOR_LIFETIME_MS:
            raise InvalidDescriptor(
                f"descriptor: lifetime of {lifetime} ms is over the maximum "
                f"{MAX_DESCRIPTOR_LIFETIME_MS} ms"
            )

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def is_expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms

    def _body(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "id": self.node_id,
            "onion": self.onion_key,
            "host": self.host,
            "port": self.port,
            "version": self.version,
            "published": self.published_ms,
            "expires": self.expires_ms,
        }


_DESCRIPTOR = Schema(
    "descriptor", {"body": Field(bytes, max_len=MAX_DESCRIPTOR_SIZE), "sig": SIG_FIELD}
)
_DESCRIPTOR_BODY = Schema(
    "descriptor.body",
    {
        "v": FORMAT_FIELD,
        "id": KEY_FIELD,
        "onion": KEY_FIELD,
        "host": HOST_FIELD,
        "port": PORT_FIELD,
        "version": VERSION_FIELD,
        "published": TIME_FIELD,
        "expires": TIME_FIELD,
    },
)


def make_descriptor(
    node_keys: NodeKeys,
    host: str,
    port: int,
    version: str,
    now_ms: int,
    lifetime_ms: int = DEFAULT_DESCRIPTOR_LIFETIME_MS,
) -> bytes:
    """The node's signed descriptor, published at ``now_ms`` and valid for ``lifetime_ms``.

    Raises :class:`InvalidDescriptor` for a field :func:`parse_descriptor` would refuse
    (a host that is not a canonical IP literal, a lifetime over the maximum, ...).
    """
    check_time(now_ms, "now_ms")
    if type(lifetime_ms) is not int:
        raise InvalidDescriptor("descriptor: lifetime_ms must be an integer")
    descriptor = NodeDescriptor(
        node_id=node_keys.identity_public,
        onion_key=node_keys.onion_public,
        host=host,
        port=port,
        version=version,
        published_ms=now_ms,
        expires_ms=now_ms + lifetime_ms,
    )
    body = encode(descriptor._body())
    return encode({"body": body, "sig": node_keys.sign(DESCRIPTOR_DOMAIN, body)})


def parse_descriptor(
    data: bytes, *, now_ms: int, max_skew_ms: int = CLOCK_SKEW_MS
) -> NodeDescriptor:
    """Check a signed descriptor from outside; see the module note for every refusal."""
    check_time(now_ms, "now_ms")
    outer = _DESCRIPTOR.decode(data, max_size=MAX_DESCRIPTOR_SIZE, max_depth=1)
    body_bytes: bytes = outer["body"]
    body = _DESCRIPTOR_BODY.decode(
        body_bytes, max_size=MAX_DESCRIPTOR_SIZE, max_depth=1, canonical=True
    )
    node_id = parse_node_id(body["id"].hex())  # InvalidId unless a valid Ed25519 point
    crypto.verify(node_id, DESCRIPTOR_DOMAIN, body_bytes, outer["sig"])  # BadSignature
    descriptor = NodeDescriptor(
        node_id=node_id,
        onion_key=body["onion"],
        host=body["host"],
        port=body["port"],
        version=body["version"],
        published_ms=body["published"],
        expires_ms=body["expires"],
    )
    if descriptor.published_ms > now_ms + max_skew_ms:
        raise FutureDescriptor(
            f"descriptor published {descriptor.published_ms - now_ms} ms in the future "
            f"(more than the allowed clock skew of {max_skew_ms} ms)"
        )
    if descriptor.is_expired(now_ms):
        raise ExpiredDescriptor(f"descriptor expired {now_ms - descriptor.expires_ms} ms ago")
    return descriptor
