"""A room's link, ``veil://room/<room ID>``, and what names a room on the client.

Strict, as the channel and bot links of :mod:`veil.onion.channel.links`: exactly the
scheme, ``room/`` and a 66-character account ID, nothing else (no query, fragment, port
or escapes); every refusal is :class:`~veil.onion.errors.InvalidLink`, and a text over
:data:`MAX_LINK_CHARS` is refused before it is looked at.
"""

from __future__ import annotations

import re
from typing import Final

from veil.client.errors import InvalidArgument
from veil.onion.errors import InvalidId, InvalidLink
from veil.onion.keys import AccountId

__all__ = ["MAX_LINK_CHARS", "format_room_link", "parse_room_link", "room_id_of"]

PREFIX: Final = "veil://room/"
MAX_LINK_CHARS: Final = 256
_ID_TEXT: Final = re.compile(r"05[0-9a-f]{64}")


def format_room_link(room: AccountId) -> str:
    return PREFIX + str(room)


def parse_room_link(text: str) -> AccountId:
    """The room a ``veil://room/<id>`` link names."""
    if not isinstance(text, str) or len(text) > MAX_LINK_CHARS:
        raise InvalidLink(f"a room link is text of at most {MAX_LINK_CHARS} characters")
    if not text.startswith(PREFIX):
        raise InvalidLink("a room link is veil://room/<room ID>")
    rest = text[len(PREFIX) :]
    if not _ID_TEXT.fullmatch(rest):
        raise InvalidLink("a room link names a room ID (05 and 64 hex digits) and nothing else")
    try:
        return AccountId.parse(rest)
    except InvalidId as exc:
        raise InvalidLink(f"a room link's ID is not an account ID: {exc}") from None


def room_id_of(room: AccountId | str) -> AccountId:
    """A room by its ID or link: :class:`~veil.onion.errors.InvalidLink` or
    :class:`~veil.client.errors.InvalidArgument` (both :class:`ValueError`)."""
    if isinstance(room, AccountId):
        return room
    if isinstance(room, str) and room.startswith("veil://"):
        return parse_room_link(room)
    try:
        return AccountId.parse(room)
    except InvalidId as exc:
        raise InvalidArgument(f"not a room ID or link: {exc}") from None
