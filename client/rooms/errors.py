"""A room's refusals, as the client raises them: one typed error per reason.

Design note
-----------
Every refusal of a room record, whether the client's own check refused it before
anything left (``local`` True: a post over the room's size or rate, an author the
room has banned, a moderator's action by someone who is not one) or the nodes of the
room's swarm did (``local`` False), is a :class:`RoomRefused`: a
:class:`~veil.client.errors.ClientError` and also the protocol's own
:class:`~veil.onion.errors.RoomError` kind (:class:`PostForged` is a
:class:`~veil.onion.errors.BadRoomSignature`, :class:`WorkMissing` an
:class:`~veil.onion.errors.InsufficientWork`, ...), so a caller may catch either tree.

A node answers a refusal with a wire status and a one-line reason
(:func:`~veil.onion.rpc.error_reply`: the text of the
:class:`~veil.onion.errors.RoomError` it raised, from :mod:`veil.onion.room`, the
module node and client share). :func:`room_error` turns it back into the typed error:
by the reason's words where they name it, else by the status (``rate_limited``,
``too_large``, ``clock_skew``, ``replayed``, ``not_found``, ``gone``; ``forbidden`` and
``unauthorized`` each cover two reasons, ``bad_request`` several). An error that is not a room's
refusal (the network failed) comes back unchanged.
"""

from __future__ import annotations

from typing import Final

from veil.client.errors import ClientError, OnionRequestFailed
from veil.onion.errors import (
    AuthorBanned,
    BadRoomSignature,
    InsufficientWork,
    MalformedRoomRecord,
    NotAModerator,
    RoomError,
    RoomPostOutOfTime,
    RoomPostRemoved,
    RoomRateLimited,
    RoomRecordTooLarge,
    StaleRoomMetadata,
    UnknownRoom,
    WireError,
)

__all__ = [
    "AuthorIsBanned",
    "NotModerator",
    "PostForged",
    "PostRemoved",
    "RoomClockSkew",
    "RoomMetadataStale",
    "RoomNotFound",
    "RoomPostTooLarge",
    "RoomRateExceeded",
    "RoomRecordRefused",
    "RoomRefused",
    "WorkMissing",
    "room_error",
]


class RoomRefused(ClientError, RoomError):
    """A room record refused: by this client before it left (``local``), or by the
    room's nodes (``status`` is the wire status they answered)."""

    def __init__(self, message: str, *, local: bool = False, status: str | None = None) -> None:
        super().__init__(message, status=status)
        self.local = local


class PostForged(RoomRefused, BadRoomSignature):
    """A record whose signature does not verify or is not its author's (owner's) key."""


class AuthorIsBanned(RoomRefused, AuthorBanned):
    """A post by an author the room has banned."""


class NotModerator(RoomRefused, NotAModerator):
    """A delete, ban, unban or metadata change by someone who may not make it."""


class RoomRateExceeded(RoomRefused, RoomRateLimited):
    """More posts from one author than the room's rate. ``retry_after_s``: when one may
    be taken again (known for a local refusal; None from a node)."""

    def __init__(
        self,
        message: str,
        *,
        local: bool = False,
        status: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, local=local, status=status)
        self.retry_after_s = retry_after_s


class WorkMissing(RoomRefused, InsufficientWork):
    """A post without the proof of work the room asks for."""


class RoomPostTooLarge(RoomRefused, RoomRecordTooLarge):
    """A post over the room's size rule (or a record over the format's bound)."""


class RoomNotFound(RoomRefused, UnknownRoom):
    """No metadata for the room: not created, expired, or not a room at all."""


class RoomClockSkew(RoomRefused, RoomPostOutOfTime):
    """A record dated outside the nodes' window (the clock, or a record kept too long
    before it was sent)."""


class RoomMetadataStale(RoomRefused, StaleRoomMetadata):
    """Metadata whose number is not above the one the nodes hold."""


class PostRemoved(RoomRefused, RoomPostRemoved):
    """A post the room's moderators deleted, sent again: the nodes keep it out."""


class RoomRecordRefused(RoomRefused, MalformedRoomRecord):
    """A record the nodes did not take as a room record (malformed, another room's)."""


_BY_STATUS: Final[dict[str, type[RoomRefused]]] = {
    "rate_limited": RoomRateExceeded,
    "too_large": RoomPostTooLarge,
    "clock_skew": RoomClockSkew,
    "replayed": RoomMetadataStale,
    "not_found": RoomNotFound,
    "gone": PostRemoved,
}
# Statuses of the network's failures, never a verdict on the record.
_NETWORK: Final = frozenset({"bad_gateway", "timeout", "unavailable", "wrong_swarm"})
# The reasons' words (veil.onion.room's messages) where one status covers several.
_BY_WORDS: Final[tuple[tuple[str, type[RoomRefused]], ...]] = (
    ("banned", AuthorIsBanned),
    ("moderat", NotModerator),
    ("work", WorkMissing),
    ("signature", PostForged),
    ("signed by", PostForged),
    ("ed25519 key", PostForged),
    ("no metadata", RoomNotFound),
    ("deleted from the room", PostRemoved),
    ("posts per", RoomRateExceeded),
    ("bytes at most", RoomPostTooLarge),
)


def _worded(text: str) -> bool:
    words = text.lower()
    return any(needle in words for needle, _ in _BY_WORDS)


def _kind(status: str, text: str) -> type[RoomRefused] | None:
    words = text.lower()
    for needle, cls in _BY_WORDS:
        if needle in words:
            return cls
    kind = _BY_STATUS.get(status)
    if kind is None:
        kind = {
            "unauthorized": PostForged,
            "forbidden": NotModerator,
            "bad_request": RoomRecordRefused,
        }.get(status)
    return kind


def _refusal(exc: BaseException) -> tuple[WireError, type[RoomRefused]] | None:
    """The node's verdict inside ``exc`` and its kind: the error itself, or for a
    request whose every try failed, the last try a node refused with a room's reason
    (the others were the network's)."""
    tries = exc.errors if isinstance(exc, OnionRequestFailed) else [exc]
    for each in reversed(tries):
        if not isinstance(each, WireError) or isinstance(each, OnionRequestFailed):
            continue
        if isinstance(exc, OnionRequestFailed):
            # Retried tries: only a refusal that names a room's reason (or the rate).
            if each.status in _NETWORK:
                continue
            if each.status != "rate_limited" and not _worded(str(each)):
                continue
        kind = _kind(each.status, str(each))
        if kind is not None:
            return each, kind
    return None


def room_error(exc: BaseException) -> BaseException:
    """The typed :class:`RoomRefused` for a node's refusal of a room record (see the
    module note); any other error unchanged."""
    if isinstance(exc, RoomRefused):
        return exc
    found = _refusal(exc)
    if found is None:
        return exc
    verdict, kind = found
    refused = kind(f"the room's nodes refused it: {verdict}", status=verdict.status)
    refused.__cause__ = exc
    return refused
