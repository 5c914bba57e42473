"""Channel posts: a signed, deterministic CBOR map in the channel's public-read namespace.

Design note
-----------
A channel is an account; its posts are stored in one of its public-read namespaces
(:data:`CHANNEL_NAMESPACE`, -1), which anyone reads and only the channel (or a key it
delegated ``post`` to) writes. The node already checks the writer's signature on the
store, but a follower reads through onion paths from nodes it does not trust, so each
post carries its own signature, checked by every follower (:func:`verify_post`): a node
that serves a forged post only gets it dropped and counted.

The post is the canonical CBOR map (one encoding per post: decoded with
``canonical=True``, so the signed bytes are the received ones re-encoded)::

    {"v": 1, "ch": channel X25519 key (32), "id": nonce (16), "ts": ms,
     "text": str, ["title": str,] "pri": 1..5, "tags": [str, ...],
     "k": signer Ed25519 key (32), ["cap": capability chain,] "sig": signature (64)}

The signature is Ed25519 under the domain :data:`POST_DOMAIN` over the same map
without ``sig``: it covers the channel (a post cannot be moved to another channel), the
nonce (two posts with the same text are two posts; the nonce is the post's ID), the
time, every field shown, the signer's key and its chain.

The signer is the channel's own key (``k`` maps to the channel's account ID, no ``cap``)
or a delegated key whose chain lets it ``post`` (a ``store`` in a namespace < 0) in the
channel's namespace: :func:`veil.onion.capability.authorize` *at the post's time*,
with the network's clock skew, as an owner's proof is checked
(:mod:`veil.onion.rpc.proof`): a post stored yesterday by a key that has since expired
is still the channel's. Revocations are the caller's (``is_revoked``).

Every size is bounded before anything is parsed (:data:`MAX_POST_BYTES`), then each
field by the schema; every refusal is a typed :class:`~veil.onion.errors.ChannelError`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

from .. import crypto
from ..capability import MAX_CHAIN_SIZE, RevocationLookup, authorize
from ..capability.signer import DelegatedSigner
from ..cbor import Field, Schema, encode
from ..crypto import Rng, system_rng
from ..errors import (
    BadPostSignature,
    BadSignature,
    CapabilityError,
    DecodeError,
    InvalidId,
    InvalidKey,
    InvalidValue,
    MalformedPost,
    PostFromFuture,
    PostTooLarge,
    SchemaError,
    TooLarge,
    WrongChannel,
)
from ..keys import Account, AccountId, account_id_of_ed25519
from ..rpc.limits import CLOCK_SKEW_MS

__all__ = [
    "CHANNEL_NAMESPACE",
    "DEFAULT_PRIORITY",
    "MAX_POST_BYTES",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TITLE_CHARS",
    "POST_DOMAIN",
    "POST_VERSION",
    "Post",
    "make_post",
    "verify_post",
]

POST_VERSION: Final = 1
#: The signature domain of posts (nothing else is signed under it).
POST_DOMAIN: Final = b"channel-post/v1"
#: The public-read namespace a channel posts into.
CHANNEL_NAMESPACE: Final = -1
#: Bounds (characters; ntfy's message limit is 4,096 bytes).
MAX_TEXT_CHARS: Final = 4096
MAX_TITLE_CHARS: Final = 256
MAX_TAGS: Final = 8
MAX_TAG_CHARS: Final = 32
DEFAULT_PRIORITY: Final = 3
NONCE_BYTES: Final = 16
#: A whole post: UTF-8 text and title at 4 bytes a character, tags, a chain, the rest.
MAX_POST_BYTES: Final = (
    4 * (MAX_TEXT_CHARS + MAX_TITLE_CHARS + MAX_TAGS * MAX_TAG_CHARS) + MAX_CHAIN_SIZE + 512
)
_MAX_TIME_MS: Final = 2**63 - 1

_FIELDS: Final = {
    "v": Field(int, choices=frozenset({POST_VERSION})),
    "ch": Field(bytes, size=32),
    "id": Field(bytes, size=NONCE_BYTES),
    "ts": Field(int, min=0, max=_MAX_TIME_MS),
    "text": Field(str, max_len=MAX_TEXT_CHARS),
    "title": Field(str, min_len=1, max_len=MAX_TITLE_CHARS, required=False),
    "pri": Field(int, min=1, max=5),
    "tags": Field(list, max_len=MAX_TAGS, items=Field(str, min_len=1, max_len=MAX_TAG_CHARS)),
    "k": Field(bytes, size=32),
    "cap": Field(bytes, min_len=1, max_len=MAX_CHAIN_SIZE, required=False),
}
_POST = Schema("channel_post", {**_FIELDS, "sig": Field(bytes, size=crypto.SIG_BYTES)})
_UNSIGNED = Schema("channel_post_unsigned", _FIELDS)


@dataclass(frozen=True, slots=True)
class Post:
    """A verified post (or one just made). ``post_id`` is its nonce: a follower keys
    posts by it; ``signer`` is the Ed25519 key that signed (the channel's, or a
    delegated key's, then ``delegated`` is True)."""

    channel: AccountId
    post_id: bytes
    timestamp_ms: int
    text: str
    title: str | None
    priority: int
    tags: tuple[str, ...]
    signer: bytes
    delegated: bool
    encoded: bytes

    def to_json(self) -> dict[str, object]:
        """A JSON-able view (``veil channel follow --json``)."""
        return {
            "channel": str(self.channel),
            "id": self.post_id.hex(),
            "ts": self.timestamp_ms,
            "text": self.text,
            "title": self.title,
            "priority": self.priority,
            "tags": list(self.tags),
            "delegated": self.delegated,
        }


def _check_text(value: object, what: str, limit: int, *, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"a post's {what} is text")
    if len(value) > limit or (not value and not empty_ok):
        raise InvalidValue(
            f"a post's {what} is {'1' if not empty_ok else '0'} to {limit} characters"
        )
    return value


def _check_tag(tag: object) -> str:
    tag = _check_text(tag, "tag", MAX_TAG_CHARS, empty_ok=False)
    if any(unicodedata.category(c)[0] in "CZ" for c in tag):
        raise InvalidValue(f"a tag has no spaces or control characters: {tag!r}")
    return tag


def make_post(
    signer: Account | DelegatedSigner,
    text: str,
    *,
    now_ms: int,
    title: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    tags: tuple[str, ...] | list[str] = (),
    channel: AccountId | None = None,
    rng: Rng = system_rng,
) -> Post:
    """A signed post of ``channel`` (default: the signer's own account, or the
    delegated signer's owner). :class:`~veil.onion.errors.InvalidValue` for text,
    title, priority or tags out of bounds (nothing is signed)."""
    _check_text(text, "text", MAX_TEXT_CHARS)
    if title is not None:
        _check_text(title, "title", MAX_TITLE_CHARS, empty_ok=False)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 5:
        raise InvalidValue("a post's priority is 1 to 5")
    tags = tuple(tags)
    if len(tags) > MAX_TAGS:
        raise InvalidValue(f"a post has at most {MAX_TAGS} tags")
    for tag in tags:
        _check_tag(tag)
    if isinstance(signer, DelegatedSigner):
        owner = signer.owner
        if not isinstance(owner, AccountId):
            raise InvalidValue("a channel is an account, not a group")
        channel = channel or owner
        key = signer.ed25519_public
        cap: bytes | None = signer.chain.encoded
    else:
        channel = channel or signer.id
        if channel != signer.id:
            raise InvalidValue("an account signs posts of its own channel only")
        key = signer.ed25519_public
        cap = None
    if isinstance(now_ms, bool) or not isinstance(now_ms, int) or not 0 <= now_ms <= _MAX_TIME_MS:
        raise InvalidValue("now_ms is a time in ms")
    body: dict[str, object] = {
        "v": POST_VERSION,
        "ch": channel.x25519_public,
        "id": rng(NONCE_BYTES),
        "ts": now_ms,
        "text": text,
        "pri": priority,
        "tags": list(tags),
        "k": key,
    }
    if title is not None:
        body["title"] = title
    if cap is not None:
        body["cap"] = cap
    unsigned = _UNSIGNED.encode(body)
    body["sig"] = signer.sign(POST_DOMAIN, unsigned)
    encoded = _POST.encode(body)
    if len(encoded) > MAX_POST_BYTES:  # cannot happen within the bounds; kept as a guard
        raise InvalidValue("post too large")
    return _post_of(body, encoded, channel)


def _post_of(obj: dict[str, object], encoded: bytes, channel: AccountId) -> Post:
    title = obj.get("title")
    tags = obj["tags"]
    assert isinstance(tags, list)
    return Post(
        channel=channel,
        post_id=obj["id"],  # type: ignore[arg-type]
        timestamp_ms=obj["ts"],  # type: ignore[arg-type]
        text=obj["text"],  # type: ignore[arg-type]
        title=title if isinstance(title, str) else None,
        priority=obj["pri"],  # type: ignore[arg-type]
        tags=tuple(tags),
        signer=obj["k"],  # type: ignore[arg-type]
        delegated="cap" in obj,
        encoded=encoded,
    )


def verify_post(
    data: bytes,
    *,
    channel: AccountId | None = None,
    now_ms: int | None = None,
    namespace: int = CHANNEL_NAMESPACE,
    skew_ms: int = CLOCK_SKEW_MS,
    is_revoked: RevocationLookup | None = None,
) -> Post:
    """Parse and check a post read from ``channel`` (None: any channel, the post's own).

    In order, each with its typed error: the size (:class:`PostTooLarge`, before
    parsing); canonical CBOR of the post's schema and tags without spaces
    (:class:`MalformedPost`); the channel (:class:`WrongChannel`); the time against
    ``now_ms`` if given (:class:`PostFromFuture`); the signer: the channel's key, or
    a chain letting it ``post`` in ``namespace`` at the post's time
    (:class:`BadPostSignature`, caused by the chain's
    :class:`~veil.onion.errors.CapabilityError`); the signature (:class:`BadPostSignature`).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedPost("a post is bytes")
    if len(data) > MAX_POST_BYTES:
        raise PostTooLarge(f"post of {len(data)} bytes; the most is {MAX_POST_BYTES}")
    try:
        obj = _POST.decode(bytes(data), max_size=MAX_POST_BYTES, max_depth=2, canonical=True)
        for tag in obj["tags"]:
            _check_tag(tag)
        owner = AccountId(obj["ch"])
    except TooLarge as exc:
        raise PostTooLarge(str(exc)) from None
    except (DecodeError, SchemaError, InvalidValue, InvalidId) as exc:
        raise MalformedPost(f"not a channel post: {exc}") from None
    if channel is not None and owner != channel:
        raise WrongChannel("the post names another channel")
    timestamp = obj["ts"]
    if now_ms is not None and timestamp > now_ms + skew_ms:
        raise PostFromFuture("the post is dated in the future")
    signer: bytes = obj["k"]
    cap = obj.get("cap")
    if cap is not None:
        try:
            authorize(
                cap,
                signer=signer,
                account=owner,
                method="store",
                namespace=namespace,
                now_ms=timestamp,
                skew_ms=skew_ms,
                is_revoked=is_revoked,
            )
        except CapabilityError as exc:
            raise BadPostSignature(f"the post's key may not post here: {exc}") from exc
    else:
        try:
            signed_by = account_id_of_ed25519(signer)
        except (InvalidKey, InvalidId):
            raise BadPostSignature("the post's key is not a valid Ed25519 key") from None
        if signed_by != owner:
            raise BadPostSignature("the post is not signed by the channel's key")
    unsigned = dict(obj)
    signature = unsigned.pop("sig")
    try:
        crypto.verify(signer, POST_DOMAIN, encode(unsigned), signature)
    except BadSignature:
        raise BadPostSignature("the post's signature does not verify") from None
    return _post_of(obj, bytes(data), owner)
