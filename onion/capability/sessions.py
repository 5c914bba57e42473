"""A delegated session as one string: the session key and its capability chain.

Design note
-----------
What ``DelegatedSession.serialize()`` gives and ``DelegatedSession.from_string(s)``
reads (the client's API, after DIDSession's ``serialize``)::

    "veil-session-v1:" + base64url, no padding, of the CBOR map
        {"v": 1, "seed": session key's Ed25519 seed (32 bytes), "chain": chain bytes}

The string holds a secret key: whoever has it may act within the chain's resources until
it expires. It is refused, with :class:`~veil.onion.errors.InvalidSession` (a local
``InvalidValue``), when it is longer than
:data:`~veil.onion.capability.limits.MAX_SESSION_CHARS` (checked first), has another
prefix, is not canonical base64url or canonical CBOR of that map, or was tampered
with: the chain must pass its structure checks and every signature, and the seed's
public key must be the chain's audience. The time is not checked here (an expired
session still loads, so that a client can say it has expired); a node checks it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from ..cbor import Field, Schema
from ..errors import InvalidSession, VeilError
from .chains import Chain
from .limits import MAX_CHAIN_SIZE, MAX_SESSION_CHARS, VERSION
from .links import SessionKey, audience_matches

__all__ = ["SESSION_PREFIX", "decode_session", "encode_session"]

SESSION_PREFIX: Final = "veil-session-v1:"

SESSION_SCHEMA: Final = Schema(
    "session",
    {
        "v": Field(int, choices={VERSION}),
        "seed": Field(bytes, size=32),
        "chain": Field(bytes, max_len=MAX_CHAIN_SIZE),
    },
)

_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def encode_session(key: SessionKey, chain: Chain) -> str:
    """The string of a session key and its chain (whose audience it must be)."""
    if not audience_matches(chain.audience, key.ed25519_public):
        raise InvalidSession("the session key is not the audience of its chain")
    return SESSION_PREFIX + _b64encode(
        SESSION_SCHEMA.encode({"v": VERSION, "seed": key.seed, "chain": chain.encoded})
    )


def decode_session(text: str) -> tuple[SessionKey, Chain]:
    """The session key and chain of a string from :func:`encode_session`, checked."""
    if not isinstance(text, str):
        raise InvalidSession("a serialized session is text")
    if len(text) > MAX_SESSION_CHARS:
        raise InvalidSession(f"a serialized session is at most {MAX_SESSION_CHARS} characters")
    if not text.startswith(SESSION_PREFIX):
        raise InvalidSession(f"a serialized session starts with {SESSION_PREFIX!r}")
    body = text[len(SESSION_PREFIX) :]
    if not _BASE64URL.fullmatch(body) or len(body) % 4 == 1:
        raise InvalidSession("a serialized session is base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern excludes it
        raise InvalidSession("a serialized session is base64url without padding") from None
    if _b64encode(raw) != body:
        raise InvalidSession("a serialized session is not in its canonical base64url")
    try:
        obj = SESSION_SCHEMA.decode(raw, max_size=MAX_CHAIN_SIZE + 128, max_depth=1, canonical=True)
        chain = Chain.decode(obj["chain"])
        chain.check_structure()
        chain.verify_signatures()
        key = SessionKey(obj["seed"])
    except VeilError as exc:
        raise InvalidSession(f"a serialized session that does not verify: {exc}") from exc
    if not audience_matches(chain.audience, key.ed25519_public):
        raise InvalidSession("the session key is not the audience of its chain")
    return key, chain
