"""Channels and bots, sans-IO (issue 14): signed channel posts, ``veil://`` links and
the bot command grammar.

* :mod:`~veil.onion.channel.posts`: :func:`make_post`, :func:`verify_post`, :class:`Post`
  (deterministic CBOR, signed under ``channel-post/v1`` by the channel's key or by a
  delegated key allowed to ``post``; a private channel's posts encrypted under its
  epoch key, :func:`epoch_id`);
* :mod:`~veil.onion.channel.links`: ``veil://channel/<id>#<key>`` invites and
  ``veil://bot/<id>?start=param`` deep links;
* :mod:`~veil.onion.channel.commands`: ``/cmd args``.

Every refusal is typed (:mod:`veil.onion.errors`): :class:`~veil.onion.errors.ChannelError`
and its kinds for posts, :class:`~veil.onion.errors.InvalidLink`,
:class:`~veil.onion.errors.InvalidCommand`.
"""

from __future__ import annotations

from .commands import MAX_COMMAND_CHARS, Command, parse_command
from .links import (
    INVITE_KEY_BYTES,
    BotLink,
    ChannelInvite,
    format_bot_link,
    format_channel_invite,
    parse_bot_link,
    parse_channel_invite,
    parse_link,
)
from .posts import (
    CHANNEL_NAMESPACE,
    DEFAULT_PRIORITY,
    EPOCH_KEY_BYTES,
    MAX_POST_BYTES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TEXT_CHARS,
    MAX_TITLE_CHARS,
    POST_DOMAIN,
    PRIVATE_POST_DOMAIN,
    Post,
    epoch_id,
    make_post,
    verify_post,
)

__all__ = [
    "CHANNEL_NAMESPACE",
    "DEFAULT_PRIORITY",
    "EPOCH_KEY_BYTES",
    "INVITE_KEY_BYTES",
    "MAX_COMMAND_CHARS",
    "MAX_POST_BYTES",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TITLE_CHARS",
    "POST_DOMAIN",
    "PRIVATE_POST_DOMAIN",
    "BotLink",
    "ChannelInvite",
    "Command",
    "Post",
    "epoch_id",
    "format_bot_link",
    "format_channel_invite",
    "make_post",
    "parse_bot_link",
    "parse_channel_invite",
    "parse_command",
    "parse_link",
    "verify_post",
]
