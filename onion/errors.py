"""One exception hierarchy for the whole protocol.

Every error that input from the network can cause is a subclass of
:class:`ProtocolError`; each class names the one wire status it maps to (``status``)
and the HTTP code a node answers with (``http_status``), so that the node never has to
guess and a client can act on the status alone. Catching :class:`VeilError` catches
everything this package raises on purpose; anything else escaping is a bug.
"""

from __future__ import annotations

from typing import ClassVar

# Wire status name -> HTTP status code. One table, so that node and client agree.
STATUS_CODES: dict[str, int] = {
    "ok": 200,
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "clock_skew": 406,
    "replayed": 409,
    "too_large": 413,
    "wrong_swarm": 421,
    "rate_limited": 429,
    "internal": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "timeout": 504,
}


class VeilError(Exception):
    """Base of every error raised on purpose by veil."""

    status: ClassVar[str] = "internal"

    @property
    def http_status(self) -> int:
        return STATUS_CODES[self.status]


# --- local misuse and local state -------------------------------------------------


class InvalidPhrase(VeilError):
    """A recovery phrase has the wrong number of words, an unknown word, or a bad checksum."""

    status = "bad_request"


class InvalidKey(VeilError):
    """A key has the wrong length or is not a valid point (local misuse)."""

    status = "bad_request"


class NetworkFileError(VeilError):
    """The network's bootstrap file (``network.json``) is not valid; the message says why."""

    status = "bad_request"


# --- bad input from the network ------------------------------------------------------


class ProtocolError(VeilError):
    """Bytes from outside that do not follow the protocol."""

    status = "bad_request"


class TooLarge(ProtocolError):
    """Input over a size limit; raised before the input is parsed."""

    status = "too_large"


class DecodeError(ProtocolError):
    """Bytes that are not well-formed (strict) CBOR."""


class SchemaError(ProtocolError):
    """Well-formed CBOR of the wrong shape: a missing, unknown or mistyped field."""


class InvalidId(ProtocolError):
    """An account, group or node ID with a bad prefix, length, hex, or key."""


class PacketError(ProtocolError):
    """An onion packet that cannot be processed."""


class MalformedPacket(PacketError):
    """Wrong length, version or size class: refused before any cryptography."""


class IntegrityError(PacketError):
    """A MAC or AEAD tag did not verify: the packet or reply was altered or not for us."""


class ReplayedPacket(PacketError):
    """A packet whose replay tag was already seen inside its window."""

    status = "replayed"


class StalePacket(PacketError):
    """A packet whose timestamp is outside the accepted window."""

    status = "clock_skew"


class EnvelopeError(ProtocolError):
    """A message envelope that does not open: not for us, altered, or badly signed."""


class BadSignature(EnvelopeError):
    """A signature that does not verify under the claimed key and domain."""

    status = "unauthorized"


class Unauthorized(ProtocolError):
    """A request without a valid signature for what it asks."""

    status = "unauthorized"


class ClockSkew(ProtocolError):
    """A signed request whose timestamp is too far from the node's clock."""

    status = "clock_skew"


class NotFound(ProtocolError):
    status = "not_found"


class RateLimited(ProtocolError):
    status = "rate_limited"


class WrongSwarm(ProtocolError):
    status = "wrong_swarm"


# --- directory: node descriptors and consensus documents ----------------------------


class DirectoryError(ProtocolError):
    """A node descriptor or consensus document that cannot be accepted."""


class InvalidDescriptor(DirectoryError):
    """A descriptor with a field that decodes but is not acceptable (address, key, times)."""


class ExpiredDescriptor(DirectoryError):
    """A descriptor past its expiry (an old one replayed, or the node's clock is off)."""

    status = "clock_skew"


class FutureDescriptor(DirectoryError):
    """A descriptor published further in the future than the allowed clock skew."""

    status = "clock_skew"


class ConsensusError(DirectoryError):
    """A consensus document that cannot be used."""


class InvalidConsensus(ConsensusError):
    """A consensus body that decodes but breaks a rule (order, times, swarm sizes)."""


class BelowThreshold(ConsensusError):
    """Fewer valid signatures from pinned authorities than the threshold requires."""

    status = "unauthorized"


class StaleConsensus(ConsensusError):
    """A consensus past its ``valid_until``, or older than one already held."""


class ConsensusNotYetValid(ConsensusError):
    """A consensus whose ``valid_after`` is still ahead (beyond the allowed clock skew)."""

    status = "clock_skew"


class VoteMismatch(DirectoryError):
    """An authority's vote or signature that is not the one asked for: another key,
    another epoch, or parameters (interval, swarm size) that differ from ours."""


# --- failures of the network itself ------------------------------------------------


class NetworkError(VeilError):
    """A hop or destination could not be reached or did not answer in time."""

    status = "bad_gateway"


class HopUnreachable(NetworkError):
    status = "bad_gateway"


class HopTimeout(NetworkError):
    status = "timeout"


class Unavailable(VeilError):
    """The node cannot serve this now (e.g. it holds no consensus yet); try later or
    elsewhere."""

    status = "unavailable"


def error_for_status(status: str, message: str = "") -> VeilError:
    """Rebuild the typed error for a wire status (the client side of the mapping)."""
    cls = _BY_STATUS.get(status, VeilError)
    err = cls(message or status)
    return err


_BY_STATUS: dict[str, type[VeilError]] = {
    "bad_request": ProtocolError,
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "clock_skew": ClockSkew,
    "replayed": ReplayedPacket,
    "too_large": TooLarge,
    "wrong_swarm": WrongSwarm,
    "rate_limited": RateLimited,
    "bad_gateway": HopUnreachable,
    "timeout": HopTimeout,
    "unavailable": Unavailable,
}
