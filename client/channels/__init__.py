"""Channels on the client (issue 14): create, post, follow, list.

A channel is an account whose public-read namespace
(:data:`~veil.onion.channel.CHANNEL_NAMESPACE`) holds its posts. One module per job:

* :mod:`~veil.client.channels.publishing`: :func:`create_channel`, :func:`open_channel`,
  :class:`Channel` and its :meth:`~Channel.post`;
* :mod:`~veil.client.channels.keys`: the seeds and private channels' keys this home
  keeps, invites (:func:`channel_invite`, :func:`revoke_invite`);
* :mod:`~veil.client.channels.following`: :func:`follow` and :class:`Follower`
  (verified posts, exactly once, notices about posts that do not open);
* :mod:`~veil.client.channels.polling`: the follow machinery channels and rooms
  (:mod:`veil.client.rooms`) share: unsigned long-polls, a path selector per thing
  followed, random timing, persist-then-yield;
* :mod:`~veil.client.channels.store`: ``HOME/channels.sqlite`` and
  :func:`list_channels`.
"""

from __future__ import annotations

from veil.client.channels.following import NOTICES, Follower, Notice, follow
from veil.client.channels.keys import channel_invite, is_private, revoke_invite

# Under their former names too: ``veil channel invite`` imports them from here.
from veil.client.channels.keys import owned as _owned  # noqa: F401
from veil.client.channels.keys import private_row as _private_row  # noqa: F401
from veil.client.channels.polling import MAX_BACKOFF_S, WAIT_RANGE_S, PublicPoller
from veil.client.channels.publishing import (
    DEFAULT_POST_TTL_S,
    Channel,
    create_channel,
    open_channel,
)
from veil.client.channels.store import ChannelInfo, list_channels

__all__ = [
    "DEFAULT_POST_TTL_S",
    "MAX_BACKOFF_S",
    "NOTICES",
    "WAIT_RANGE_S",
    "Channel",
    "ChannelInfo",
    "Follower",
    "Notice",
    "PublicPoller",
    "channel_invite",
    "create_channel",
    "follow",
    "is_private",
    "list_channels",
    "open_channel",
    "revoke_invite",
]
