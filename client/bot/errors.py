"""The bot framework's errors (all :class:`~veil.client.errors.ClientError`)."""

from __future__ import annotations

from veil.client.errors import ClientError, InvalidArgument

__all__ = [
    "BotError",
    "BotStoreError",
    "CodeAlreadyUsed",
    "InvalidCodeRequest",
    "TooManyCodes",
    "UnknownTicket",
]


class BotError(ClientError):
    """Base of the bot framework's errors."""


class BotStoreError(BotError):
    """The bot's database or code secret in its home cannot be used."""


class InvalidCodeRequest(BotError, InvalidArgument):
    """A code request out of bounds (digits, TTL, purpose); nothing was sent."""


class TooManyCodes(BotError):
    """The recipient has had as many codes for this purpose as the rate limit allows
    (or too many failed checks): nothing was sent. ``retry_after_s`` says when to ask
    again."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownTicket(BotError, InvalidArgument):
    """No ticket of this bot has this ID."""


class CodeAlreadyUsed(BotError):
    """The ticket was approved already: a code is single use."""
