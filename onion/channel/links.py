"""``veil://`` links: channel invites and bot deep links. Strict parse and format.

Design note
-----------
Two forms, and nothing else is accepted (no user info, port, other query keys, or
percent-escapes: a link is copied between people, and a lenient parser is where two
programs start to disagree on what a link names)::

    veil://channel/<channel ID>[#<key>]     an invite; the key only after '#'
    veil://bot/<bot ID>[?start=<param>]     a bot's deep link (Telegram's ?start=)

The invite's key (a private channel's, base64url without padding, 32 bytes) is in the
fragment, which browsers and HTTP clients never send to a server, as in Matrix's and
Signal's links. The ``start`` parameter follows Telegram's rule: 1 to 64 characters of
``A-Z a-z 0-9 _ -``. Every refusal is :class:`~veil.onion.errors.InvalidLink`; a link
is at most :data:`MAX_LINK_CHARS` characters, checked first.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from ..errors import InvalidId, InvalidLink
from ..keys import AccountId

__all__ = [
    "INVITE_KEY_BYTES",
    "MAX_LINK_CHARS",
    "MAX_START_CHARS",
    "BotLink",
    "ChannelInvite",
    "format_bot_link",
    "format_channel_invite",
    "parse_bot_link",
    "parse_channel_invite",
    "parse_link",
]

SCHEME: Final = "veil://"
MAX_LINK_CHARS: Final = 256
MAX_START_CHARS: Final = 64
INVITE_KEY_BYTES: Final = 32
_START: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_TEXT: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_ID_TEXT: Final = re.compile(r"05[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ChannelInvite:
    """A channel to follow, with a private channel's key (None: a public channel)."""

    channel: AccountId
    key: bytes | None = None

    def __str__(self) -> str:
        return format_channel_invite(self.channel, self.key)

    def __repr__(self) -> str:  # never print the key
        return f"ChannelInvite({self.channel}, key={'yes' if self.key else 'no'})"


@dataclass(frozen=True, slots=True)
class BotLink:
    """A bot to talk to, with the ``/start`` parameter to send it (None: none)."""

    bot: AccountId
    start: str | None = None

    def __str__(self) -> str:
        return format_bot_link(self.bot, self.start)


def _account(text: str) -> AccountId:
    if not _ID_TEXT.fullmatch(text):
        raise InvalidLink("the link's ID is not an account ID (05 and 64 lowercase hex digits)")
    try:
        return AccountId.parse(text)
    except InvalidId as exc:
        raise InvalidLink(f"the link's ID: {exc}") from None


def _key_text(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def format_channel_invite(channel: AccountId, key: bytes | None = None) -> str:
    """``veil://channel/<id>`` or, with a private channel's key, ``...#<key>``."""
    if key is None:
        return f"{SCHEME}channel/{channel}"
    if not isinstance(key, bytes) or len(key) != INVITE_KEY_BYTES:
        raise InvalidLink(f"an invite key is {INVITE_KEY_BYTES} bytes")
    return f"{SCHEME}channel/{channel}#{_key_text(key)}"


def format_bot_link(bot: AccountId, start: str | None = None) -> str:
    """``veil://bot/<id>`` or ``veil://bot/<id>?start=<param>``."""
    if start is None:
        return f"{SCHEME}bot/{bot}"
    if not isinstance(start, str) or not _START.fullmatch(start):
        raise InvalidLink("a start parameter is 1 to 64 of A-Z a-z 0-9 _ -")
    return f"{SCHEME}bot/{bot}?start={start}"


def _split(text: object, kind: str) -> str:
    if not isinstance(text, str):
        raise InvalidLink("a link is text")
    if len(text) > MAX_LINK_CHARS:
        raise InvalidLink(f"a link is at most {MAX_LINK_CHARS} characters")
    prefix = f"{SCHEME}{kind}/"
    if not text.startswith(prefix):
        raise InvalidLink(f"not a {prefix} link")
    return text[len(prefix) :]


def parse_channel_invite(text: str) -> ChannelInvite:
    """The channel and key of ``veil://channel/<id>[#<key>]``; :class:`InvalidLink`."""
    rest = _split(text, "channel")
    ident, sep, fragment = rest.partition("#")
    if "?" in ident or "/" in ident:
        raise InvalidLink("a channel link has no path or query after its ID")
    channel = _account(ident)
    if not sep:
        return ChannelInvite(channel)
    if not _KEY_TEXT.fullmatch(fragment):
        raise InvalidLink("an invite key is 43 characters of base64url")
    try:
        key = base64.urlsafe_b64decode(fragment + "=")
    except (binascii.Error, ValueError):
        raise InvalidLink("an invite key is base64url") from None
    if len(key) != INVITE_KEY_BYTES or _key_text(key) != fragment:
        raise InvalidLink("an invite key is 32 bytes in canonical base64url")
    return ChannelInvite(channel, key)


def parse_bot_link(text: str) -> BotLink:
    """The bot and start parameter of ``veil://bot/<id>[?start=<p>]``; :class:`InvalidLink`."""
    rest = _split(text, "bot")
    if "#" in rest:
        raise InvalidLink("a bot link has no fragment")
    ident, sep, query = rest.partition("?")
    if "/" in ident:
        raise InvalidLink("a bot link has no path after its ID")
    bot = _account(ident)
    if not sep:
        return BotLink(bot)
    key, eq, value = query.partition("=")
    if key != "start" or not eq or not _START.fullmatch(value):
        raise InvalidLink("a bot link's query is start= and 1 to 64 of A-Z a-z 0-9 _ -")
    return BotLink(bot, value)


def parse_link(text: str) -> ChannelInvite | BotLink:
    """Either kind of link, by its form."""
    if isinstance(text, str) and text.startswith(f"{SCHEME}bot/"):
        return parse_bot_link(text)
    return parse_channel_invite(text)
