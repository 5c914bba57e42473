"""The root of veil's exceptions, and the errors of the protocol.

Every exception veil raises on purpose, in all three packages, is a :class:`VeilError`;
catching it catches everything raised on purpose, and anything else escaping is a bug.
Each package keeps its own errors in one module (``veil.onion.errors``,
``veil.node.errors``, ``veil.client.errors``), all rooted here.

Two kinds:

* Errors that travel (:class:`WireError`): bytes from outside that do not follow the
  protocol (:class:`ProtocolError`), a hop that failed (:class:`NetworkError`), a node
  that cannot serve now (:class:`Unavailable`). Each names the one wire status it maps to
  (``status``) and so the HTTP code a node answers with (``http_status``), so that the
  node never has to guess and a client can act on the status alone. ``status`` is an
  instance attribute whose default is the class's: an error rebuilt from a peer's answer
  keeps the status the peer sent.
* Local errors, which never cross the network and so carry no status: a value the API
  cannot take (:class:`InvalidValue` and its kinds, a bad key, phrase or TTL: these are
  also :class:`ValueError`, as pynacl's are), a bad network file, and the node's and
  client's own (a bad config, a missing identity).

Why one module of about 700 lines: it is the one table of the protocol's errors and
their wire statuses (:data:`STATUS_CODES`, :func:`error_for_status`), read as a whole by
whoever maps a status to a type, node and client alike; every class is a few lines, and
split by subsystem the hierarchy (a room's ban is a :class:`Forbidden`, a record too
large a :class:`TooLarge`) would be read across files.
"""

from __future__ import annotations

# Wire status name -> HTTP status code. One table, so that node and client agree.
STATUS_CODES: dict[str, int] = {
    "ok": 200,
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "clock_skew": 406,
    "replayed": 409,
    "gone": 410,
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


class WireError(VeilError):
    """An error that crosses the network: it maps to one wire status and HTTP code.

    ``status`` defaults to the class's; pass ``status=`` for an error whose status is
    known only at run time (a hop's answer). A status outside :data:`STATUS_CODES`
    becomes ``internal``.
    """

    status: str = "internal"

    def __init__(self, *args: object, status: str | None = None) -> None:
        super().__init__(*args)
        if status is not None:
            self.status = status if status in STATUS_CODES else "internal"

    @property
    def http_status(self) -> int:
        return STATUS_CODES[self.status]


def wire_status(error: VeilError) -> str:
    """The status a node answers for ``error``: its own for a :class:`WireError`,
    ``bad_request`` for a local error met while handling a request (a key in it that is
    not a valid point, say: the request was at fault, not the node)."""
    return error.status if isinstance(error, WireError) else "bad_request"


# --- local misuse and local state -------------------------------------------------


class InvalidValue(VeilError, ValueError):
    """A value that veil's functions cannot take, given by their caller rather than read
    from the network (a path of seven hops, a negative length, a key of the wrong size):
    refused before anything is done. Also a :class:`ValueError`, as pynacl's errors are,
    so that code written against the built-in still catches it."""


class InvalidPhrase(InvalidValue):
    """A recovery phrase has the wrong number of words, an unknown word, or a bad checksum."""


class InvalidKey(InvalidValue):
    """A key has the wrong length or is not a valid point (local misuse)."""


class NetworkFileError(VeilError):
    """The network's bootstrap file (``network.json``) is not valid; the message says why."""


class InvalidTtl(InvalidValue):
    """A TTL given to a request builder that the namespace would refuse (local misuse;
    the same TTL read from the wire is a :class:`BadTtl`)."""


class UnsignedRequest(InvalidValue):
    """A request builder asked for a request that only the account's owner may make
    (a store outside the inbox, a private read) without the owner's Account."""


class InvalidDid(InvalidValue):
    """A ``did:key`` string that is not an Ed25519 key in veil's form (``did:key:z6Mk...``:
    multicodec ed25519-pub, base58btc): a bad prefix, alphabet, length, multicodec or
    point. Local misuse: keys travel as raw bytes on the wire, never as DIDs."""


class InvalidResource(InvalidValue):
    """A resource written for the command line (``OWNER:NAMESPACES:ACTIONS``) or passed to
    a capability builder that cannot be one: a bad owner, namespace range or action."""


class InvalidSession(InvalidValue):
    """A serialized delegated session (``DelegatedSession.from_string``) that is not one:
    a bad prefix or encoding, over its size limit, or tampered with (its chain does not
    verify, or the session key is not the chain's audience). The cause, if any, is the
    chain's own :class:`CapabilityError`."""


class InvalidRights(InvalidValue):
    """Encryption-session rights that are not a set of ``read``, ``forward``, ``revoke``
    holding ``read``, or a policy other than ``rights`` and ``delegation`` (local misuse)."""


class RawMessageHasNoSession(InvalidValue):
    """A raw encrypted message (the base64 data alone, without ``sessionId``) given where
    its session must be found from the message: a raw message cannot name its session
    (as in Seald); pass the session, or use the JSON form."""


class PacketMisuse(VeilError, RuntimeError):
    """An onion packet object used against its rules: a reply context answered twice,
    prepared hop keys used twice, a relay asked to seal a reply (a bug in the caller)."""


# --- bad input from the network ------------------------------------------------------


class ProtocolError(WireError):
    """Bytes from outside that do not follow the protocol."""

    status = "bad_request"


class TooLarge(ProtocolError):
    """Input over a size limit; raised before the input is parsed."""

    status = "too_large"


class DecodeError(ProtocolError):
    """Bytes that are not well-formed (strict) CBOR."""


class SchemaError(ProtocolError):
    """Well-formed CBOR of the wrong shape: a missing, unknown or mistyped field."""


class BadTtl(SchemaError):
    """A request's TTL that is missing, not an integer, or outside its namespace's limits."""


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


class Forbidden(ProtocolError):
    """The request is authentic, but its signer may not do this (a room's banned
    author, someone who is not the room's moderator)."""

    status = "forbidden"


class ClockSkew(ProtocolError):
    """A signed request whose timestamp is too far from the node's clock."""

    status = "clock_skew"


class NotFound(ProtocolError):
    status = "not_found"


class RateLimited(ProtocolError):
    status = "rate_limited"


class WrongSwarm(ProtocolError):
    status = "wrong_swarm"


# --- delegated keys: capabilities, chains, revocations -------------------------------


class CapabilityError(ProtocolError):
    """A delegated-key capability, chain or revocation that does not authorize what it is
    offered for. ``unauthorized`` unless the subclass says otherwise."""

    status = "unauthorized"


class MalformedCapability(CapabilityError):
    """A capability, chain or revocation whose bytes are not the format: not strict CBOR,
    a missing, unknown or mistyped field, a value out of range (times out of order,
    unsorted actions, an unknown owner kind). Refused before any signature is checked."""

    status = "bad_request"


class UnknownAction(MalformedCapability):
    """A resource that lists an action veil does not know: refused, never ignored."""


class CapabilityTooLarge(CapabilityError, TooLarge):
    """A chain, link, revocation or session over its byte limit: refused before parsing."""

    status = "too_large"


class ChainTooLong(CapabilityTooLarge):
    """A chain of more links than allowed (8): refused before any link is parsed."""


class CapabilityExpired(CapabilityError):
    """A link of the chain (or the revoked link) is past its expiry, beyond the clock skew."""


class CapabilityNotYetValid(CapabilityError):
    """A link of the chain whose not-before is still ahead, beyond the clock skew."""

    status = "clock_skew"


class CapabilityRevoked(CapabilityError):
    """A link of the chain was revoked; everything below it stops working."""


class AttenuationError(CapabilityError):
    """A link that gives more than its parent holds."""


class ResourcesWidened(AttenuationError):
    """A link lists a resource, namespace or action that its parent does not hold with
    ``delegate``."""


class ExpiryExtended(AttenuationError):
    """A link that expires later than its parent."""


class WrongIssuer(CapabilityError):
    """A link issued by a key other than its parent's audience (the account's key for
    the first link), or naming a proof that is not its parent."""


class BadCapabilitySignature(CapabilityError):
    """A link or revocation whose signature does not verify under its issuer's key."""


class WrongAccount(CapabilityError):
    """A chain for another account (or group) than the one the request is for."""


class WrongAudience(CapabilityError):
    """A request signed by a key that is not the audience of the chain's last link."""


class ActionNotCovered(CapabilityError):
    """A chain that does not grant the action in the namespace asked for.

    ``action`` names the missing action and ``namespace`` the namespace (None: every
    namespace, as for ``delete_all``), so that a client can say which right it lacks."""

    def __init__(
        self,
        *args: object,
        action: str = "",
        namespace: int | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(*args, status=status)
        self.action = action
        self.namespace = namespace


class NotEntitledToRevoke(CapabilityError):
    """A revocation signed by a key that is neither the account's, nor an issuer upstream
    of the revoked link, nor a holder of ``revoke`` over every resource of that link."""


# --- encryption sessions: records, messages, files -----------------------------------


class GroupError(ProtocolError):
    """An encryption-session record, message or file that cannot be accepted.
    ``bad_request`` unless the subclass says otherwise."""


class MalformedRecord(GroupError):
    """A session record whose bytes are not the format (not strict canonical CBOR, a
    missing, unknown or mistyped field, a value out of range, capability links that are
    not a session's rights): refused before any signature is checked."""


class RecordTooLarge(GroupError, TooLarge):
    """A session record, message or file header over its byte limit: refused before
    parsing."""

    status = "too_large"


class BadRecordSignature(GroupError):
    """A session record or message whose signature does not verify under its signer's
    key (or whose capability chain does not)."""

    status = "unauthorized"


class WrongSession(GroupError):
    """A record, message or file of another session than the one it is offered to."""


class UnknownSession(GroupError):
    """A record offered for a session whose genesis record is not known (store the
    genesis first), or a genesis that conflicts with the one kept."""

    status = "not_found"


class SessionRevoked(GroupError):
    """The whole session was revoked: nodes refuse its stores and reads (wire status
    ``gone``, 410: the session existed and is over, which ``not_found`` could not tell
    a client), clients refuse to use it."""

    status = "gone"


class NotAMember(GroupError):
    """A key that holds no live membership of the session (never added, expired or
    revoked), or a member that holds no key of the epoch asked for."""

    status = "unauthorized"


class RightMissing(GroupError):
    """A member that lacks the session right an operation needs (``read``, ``forward``,
    ``revoke``), named by ``right``; also a member giving a right it lacks."""

    status = "unauthorized"

    def __init__(self, *args: object, right: str = "", status: str | None = None) -> None:
        super().__init__(*args, status=status)
        self.right = right


class RevocationNotAllowed(GroupError):
    """A revocation that the session's policy forbids: under ``rights`` by a member
    without ``revoke``; under either policy of the creator."""

    status = "unauthorized"


class RecordFromFuture(GroupError):
    """A record dated further ahead of the node's clock than the allowed skew."""

    status = "clock_skew"


class UnknownEpoch(GroupError):
    """A message or file that names a key epoch that the reader does not know or holds
    no key of."""

    status = "not_found"


class MalformedMessage(GroupError):
    """An encrypted message (or file) that is not the format: not the JSON form or
    base64, an unknown version, a plaintext that is not the inner format."""


class MessageTampered(GroupError):
    """An encrypted message that does not open under its epoch's key: altered, or not
    of this session."""


class BadAuthor(GroupError):
    """A group message whose author signature does not verify, or whose author was not a
    member (with ``read``) at the time it says it was sent."""

    status = "unauthorized"


class FileError(GroupError):
    """An encrypted file that cannot be decrypted."""


class FileTampered(FileError):
    """A chunk or the header of an encrypted file was altered, or chunks were reordered
    (libsodium's secretstream tells neither apart from the other)."""


class FileTruncated(FileError):
    """An encrypted file that ends before its final chunk."""


class FileExtended(FileError):
    """Bytes after the final chunk of an encrypted file."""


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


# --- channels and bots (issue 14) ---------------------------------------------------


class ChannelError(ProtocolError):
    """A channel post that cannot be accepted (veil.onion.channel)."""


class PostTooLarge(ChannelError, TooLarge):
    """A post over its size limit, refused before it is parsed."""


class MalformedPost(ChannelError):
    """A post that is not a well-formed, canonical post map (bad CBOR, a missing or
    mistyped field, a tag or title out of bounds)."""


class WrongChannel(ChannelError):
    """A post for another channel than the one it was read from."""


class BadPostSignature(ChannelError):
    """A post whose signature does not verify, or signed by a key that is neither the
    channel's nor allowed to ``post`` for it by its capability chain."""

    status = "unauthorized"


class PostFromFuture(ChannelError):
    """A post dated further in the future than the clock skew allows."""

    status = "clock_skew"


class PostLocked(ChannelError):
    """A private channel's post, signed by the channel, that the reader cannot open: it
    holds no key, or the post is under another epoch's key (the invite was revoked, or
    the post is older than the invite). ``epoch``: the post's epoch ID; ``previous``:
    the epoch ID it names as the one before (None if none); ``timestamp_ms``: its time."""

    epoch: bytes | None = None
    previous: bytes | None = None
    timestamp_ms: int | None = None


# --- open groups: rooms (issue 16) ---------------------------------------------------


class RoomError(ProtocolError):
    """A room record (metadata, post, moderation) that cannot be accepted
    (veil.onion.room). ``bad_request`` unless the subclass says otherwise."""


class MalformedRoomRecord(RoomError):
    """Not a well-formed, canonical room record (bad CBOR, a missing or mistyped field,
    a value out of the format's bounds)."""


class RoomRecordTooLarge(RoomError, TooLarge):
    """A room record over its size limit (refused before parsing), or a post whose text
    is over the room's own size rule."""

    status = "too_large"


class WrongRoom(RoomError):
    """A record for another room than the one it is checked against."""


class UnknownRoom(RoomError):
    """The room has no valid metadata yet: nothing can be checked against its rules."""

    status = "not_found"


class BadRoomSignature(RoomError):
    """A room record whose signature does not verify, or signed by a key that is not
    the one the record names (the author's, the owner's)."""

    status = "unauthorized"


class NotAModerator(RoomError, Forbidden):
    """A moderation record signed by neither the room's owner nor a listed moderator."""

    status = "forbidden"


class AuthorBanned(RoomError, Forbidden):
    """A post by an author the room's owner or a moderator has banned."""

    status = "forbidden"


class InsufficientWork(RoomError):
    """A post without the proof of work the room's rules ask for, or with one that
    does not reach the room's difficulty."""


class RoomPostOutOfTime(RoomError):
    """A post or record dated outside the accepted window around the node's clock."""

    status = "clock_skew"


class RoomRateLimited(RoomError):
    """An author over the room's per-author post rate."""

    status = "rate_limited"


class StaleRoomMetadata(RoomError):
    """Room metadata whose sequence number is not above the one already held."""

    status = "replayed"


class RoomPostRemoved(RoomError):
    """A post the room's moderators deleted: it is not stored again (readers drop it
    too). ``gone``: the post was there and was taken away."""

    status = "gone"


class RoomRecordsNotDeletable(RoomError):
    """A ``delete``, ``delete_all`` or ``expire`` of a room's namespace: its records go
    by moderation (a moderator's delete or ban) or by their TTL, never by request."""


class InvalidLink(InvalidValue):
    """A ``veil://`` link (channel invite, bot deep link) that does not parse."""


class InvalidCommand(InvalidValue):
    """A bot command (``/cmd args``) that does not parse: a bad name, too long."""


# --- failures of the network itself ------------------------------------------------


class NetworkError(WireError):
    """A hop or destination could not be reached or did not answer in time."""

    status = "bad_gateway"


class HopUnreachable(NetworkError):
    status = "bad_gateway"


class HopTimeout(NetworkError):
    status = "timeout"


class Unavailable(WireError):
    """The node cannot serve this now (e.g. it holds no consensus yet); try later or
    elsewhere."""

    status = "unavailable"


def error_for_status(status: str, message: str = "") -> WireError:
    """Rebuild the typed error for a wire status (the client side of the mapping)."""
    cls = _BY_STATUS.get(status, WireError)
    return cls(message or status, status=status)


_BY_STATUS: dict[str, type[WireError]] = {
    "bad_request": ProtocolError,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "gone": SessionRevoked,
    "clock_skew": ClockSkew,
    "replayed": ReplayedPacket,
    "too_large": TooLarge,
    "wrong_swarm": WrongSwarm,
    "rate_limited": RateLimited,
    "bad_gateway": HopUnreachable,
    "timeout": HopTimeout,
    "unavailable": Unavailable,
}
