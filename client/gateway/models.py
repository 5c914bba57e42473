"""The gateway's request and answer bodies (pydantic): the OpenAPI document's schemas
come from these. Bounds match the bot's (:mod:`veil.client.bot.codes`), so a request out
of them is refused with a 422 naming the field before the bot is asked."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from veil.onion.errors import InvalidId
from veil.onion.keys import AccountId

__all__ = [
    "BroadcastIn",
    "BroadcastOut",
    "CodeCheckIn",
    "CodeIn",
    "CodeOut",
    "Health",
    "MessageIn",
    "MessageOut",
    "PostIn",
    "PostOut",
    "SubscribersOut",
]

_ACCOUNT_ID = r"^05[0-9a-fA-F]{64}$"
Purpose = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="what the code is for")
Topic = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="a topic")
CodeStatus = Literal["pending", "approved", "canceled", "expired", "max_attempts_reached"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _account_id(value: str) -> str:
    try:
        return str(AccountId.parse(value))
    except (InvalidId, ValueError, TypeError):
        raise ValueError("not a veil account ID") from None


class MessageIn(_In):
    to: str = Field(pattern=_ACCOUNT_ID, description="the recipient's account ID (05 + 64 hex)")
    text: str = Field(min_length=1, max_length=4000)
    ttl: int = Field(default=7 * 86400, ge=10, le=14 * 86400, description="seconds kept")

    _to = field_validator("to")(_account_id)


class MessageOut(BaseModel):
    hash: str = Field(description="the message's hash (hex)")
    to: str


class CodeIn(_In):
    to: str = Field(pattern=_ACCOUNT_ID, description="the recipient's account ID (05 + 64 hex)")
    purpose: str = Purpose
    ttl: int = Field(default=600, ge=10, le=600, description="the code's lifetime (s)")
    digits: int = Field(default=6, ge=6, le=10)
    alphanumeric: bool = False

    _to = field_validator("to")(_account_id)


class CodeOut(BaseModel):
    ticket: str
    status: CodeStatus
    attempts_left: int = Field(ge=0)


class CodeCheckIn(_In):
    code: str = Field(min_length=1, max_length=40)


class PostIn(_In):
    text: str = Field(min_length=1, max_length=4096)
    title: str | None = Field(default=None, max_length=256)
    priority: int = Field(default=3, ge=1, le=5)
    tags: list[str] = Field(default_factory=list, max_length=8)
    ttl: int = Field(default=7 * 86400, ge=10, le=14 * 86400)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not 1 <= len(tag) <= 32 or not tag.isprintable():
                raise ValueError("a tag is 1 to 32 printable characters")
        return tags


class PostOut(BaseModel):
    channel: str
    id: str
    ts: int
    text: str
    title: str | None
    priority: int
    tags: list[str]


class BroadcastIn(_In):
    topic: str = Topic
    text: str = Field(min_length=1, max_length=4000)
    ttl: int = Field(default=7 * 86400, ge=10, le=14 * 86400)


class BroadcastOut(BaseModel):
    id: str
    topic: str
    status: Literal["running", "done"]
    sent: int
    failed: int
    pending: int
    total: int


class SubscribersOut(BaseModel):
    topic: str
    subscribers: list[str]
    next: str | None = Field(description="give as ?after= for the next page; null at the end")


class Health(BaseModel):
    status: Literal["ok"]
    bot: str
