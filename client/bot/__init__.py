"""Bots on veil (issue 14): commands, subscribers, broadcasts, one-time codes, rooms.

* :class:`Bot` (:mod:`veil.client.bot.bot`): a trio bot on a
  :class:`~veil.client.veil_client.VeilClient`; its broadcasts
  (:mod:`veil.client.bot.broadcasts`) and its answers to commands posted in rooms
  (:mod:`veil.client.bot.rooms`, :meth:`Bot.serve_room`);
* :class:`CodeBook` (:mod:`veil.client.bot.codes`): one-time-code tickets and their rules;
* :class:`BotStore` (:mod:`veil.client.bot.store`): the bot's SQLite database and code
  secret in its home.
"""

from __future__ import annotations

from veil.client.bot.bot import Bot, BotContext, BroadcastProgress, BroadcastResult
from veil.client.bot.codes import (
    APPROVED,
    CANCELED,
    EXPIRED,
    MAX_ATTEMPTS_REACHED,
    PENDING,
    CodeBook,
    CodeCheck,
)
from veil.client.bot.errors import (
    BotError,
    BotStoreError,
    CodeAlreadyUsed,
    InvalidCodeRequest,
    TooManyCodes,
    UnknownTicket,
)
from veil.client.bot.store import BotStore

__all__ = [
    "APPROVED",
    "CANCELED",
    "EXPIRED",
    "MAX_ATTEMPTS_REACHED",
    "PENDING",
    "Bot",
    "BotContext",
    "BotError",
    "BotStore",
    "BotStoreError",
    "BroadcastProgress",
    "BroadcastResult",
    "CodeAlreadyUsed",
    "CodeBook",
    "CodeCheck",
    "InvalidCodeRequest",
    "TooManyCodes",
    "UnknownTicket",
]
