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

**Private posts** (version 2) hide everything a follower reads behind the channel's
current *epoch key* ``K`` (32 random bytes the channel keeps; it travels only in the
invite link's fragment). The post map is::

    {"v": 2, "ch": ..., "id": ..., "ts": ms, "ep": epoch ID (32), ["pe": previous
     epoch ID (32),] "box": nonce (24) || ciphertext, "k": ..., ["cap": ...], "sig": ...}

with ``ep = BLAKE2b(key=K, person="veil/chan-epoch", ch)`` (one-way: the ID names the
key, it does not give it) and ``box`` the XChaCha20-Poly1305 encryption, under
``k = BLAKE2b(key=K, person="veil/chan-boxkey", ch || ep)``, of the canonical CBOR
``{"text", ["title",] "pri", "tags"}`` padded with Padmé (:mod:`veil.onion.padding`,
the whole box on the grid, 256 bytes at least), the associated data
``"veil/channel-box/v1" NUL || ch || ep || id``: a box opens only in its own channel,
epoch and post. The priority is inside (a node sees no field a follower reads). The
signature (domain :data:`PRIVATE_POST_DOMAIN`) covers the map without ``sig``, so the
ciphertext is the channel's: followers check authorship before decrypting, and a node,
which sees only this map, checks the store's signature as for any post. ``pe`` names
the epoch before (set after the invite is revoked): a follower holding that epoch's
key learns its invite was revoked even when no older post is left.

Every size is bounded before anything is parsed (:data:`MAX_POST_BYTES`), then each
field by the schema; every refusal is a typed :class:`~veil.onion.errors.ChannelError`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

from .. import crypto, padding
from ..capability import MAX_CHAIN_SIZE, RevocationLookup, authorize
from ..capability.signer import DelegatedSigner
from ..cbor import Field, Schema, decode, encode
from ..crypto import Rng, system_rng
from ..errors import (
    BadPostSignature,
    BadSignature,
    CapabilityError,
    DecodeError,
    IntegrityError,
    InvalidId,
    InvalidKey,
    InvalidValue,
    MalformedPost,
    PostFromFuture,
    PostLocked,
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
    "EPOCH_KEY_BYTES",
    "MAX_POST_BYTES",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TITLE_CHARS",
    "POST_DOMAIN",
    "POST_VERSION",
    "PRIVATE_POST_DOMAIN",
    "PRIVATE_POST_VERSION",
    "Post",
    "epoch_id",
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
#: A whole post: UTF-8 text and title at 4 bytes a character, tags, a chain, the rest
#: (a private post's padding, nonce and tag included).
MAX_POST_BYTES: Final = (
    4 * (MAX_TEXT_CHARS + MAX_TITLE_CHARS + MAX_TAGS * MAX_TAG_CHARS) + MAX_CHAIN_SIZE + 2048
)
_MAX_TIME_MS: Final = 2**63 - 1
PRIVATE_POST_VERSION: Final = 2
#: The signature domain of private (encrypted) posts.
PRIVATE_POST_DOMAIN: Final = b"channel-private/v1"
EPOCH_KEY_BYTES: Final = 32
_EPOCH_PURPOSE: Final = b"veil/chan-epoch"
_BOX_KEY_PURPOSE: Final = b"veil/chan-boxkey"
_BOX_AD: Final = b"veil/channel-box/v1\x00"
_BOX_OVERHEAD: Final = crypto.XNONCE_BYTES + crypto.AEAD_TAG_BYTES
#: The plaintext bound of a box (text, title and tags at 4 bytes a character, the rest).
_MAX_INNER: Final = 4 * (MAX_TEXT_CHARS + MAX_TITLE_CHARS + MAX_TAGS * MAX_TAG_CHARS) + 128
_MAX_BOX: Final = padding.padded_length(_MAX_INNER, overhead=_BOX_OVERHEAD)

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
_PRIVATE_FIELDS: Final = {
    "v": Field(int, choices=frozenset({PRIVATE_POST_VERSION})),
    "ch": _FIELDS["ch"],
    "id": _FIELDS["id"],
    "ts": _FIELDS["ts"],
    "ep": Field(bytes, size=32),
    "pe": Field(bytes, size=32, required=False),
    "box": Field(bytes, min_len=_BOX_OVERHEAD, max_len=_MAX_BOX),
    "k": _FIELDS["k"],
    "cap": _FIELDS["cap"],
}
_PRIVATE = Schema(
    "channel_private_post", {**_PRIVATE_FIELDS, "sig": Field(bytes, size=crypto.SIG_BYTES)}
)
_PRIVATE_UNSIGNED = Schema("channel_private_post_unsigned", _PRIVATE_FIELDS)
_INNER = Schema(
    "channel_post_body",
    {key: _FIELDS[key] for key in ("text", "title", "pri", "tags")},
)


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
    #: A private post's epoch ID (None: a public post).
    epoch: bytes | None = None

    @property
    def private(self) -> bool:
        return self.epoch is not None

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
            "private": self.private,
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
    epoch_key: bytes | None = None,
    previous: bytes | None = None,
    rng: Rng = system_rng,
) -> Post:
    """A signed post of ``channel`` (default: the signer's own account, or the
    delegated signer's owner). :class:`~veil.onion.errors.InvalidValue` for text,
    title, priority or tags out of bounds (nothing is signed).

    With ``epoch_key`` (a private channel's current key) the post is private: its text, title,
    priority and tags are encrypted (see the module note); ``previous`` is the epoch ID
    before this one, if any."""
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
    inner: dict[str, object] = {"text": text, "pri": priority, "tags": list(tags)}
    if title is not None:
        inner["title"] = title
    post_id = rng(NONCE_BYTES)
    if epoch_key is not None:
        return _make_private(
            signer, channel, post_id, now_ms, inner, epoch_key, previous, key, cap, rng
        )
    if previous is not None:
        raise InvalidValue("a previous epoch is for a private post")
    body: dict[str, object] = {
        "v": POST_VERSION,
        "ch": channel.x25519_public,
        "id": post_id,
        "ts": now_ms,
        **inner,
        "k": key,
    }
    if cap is not None:
        body["cap"] = cap
    unsigned = _UNSIGNED.encode(body)
    body["sig"] = signer.sign(POST_DOMAIN, unsigned)
    encoded = _POST.encode(body)
    if len(encoded) > MAX_POST_BYTES:  # cannot happen within the bounds; kept as a guard
        raise InvalidValue("post too large")
    return _post_of(body, encoded, channel)


def epoch_id(key: bytes, channel: AccountId) -> bytes:
    """The ID of a private channel's epoch key ``key`` (one-way: it names the key)."""
    if not isinstance(key, bytes) or len(key) != EPOCH_KEY_BYTES:
        raise InvalidValue(f"an epoch key is {EPOCH_KEY_BYTES} bytes")
    return crypto.kdf(key, _EPOCH_PURPOSE, 32, channel.x25519_public)


def _box_key(key: bytes, ch: bytes, epoch: bytes) -> bytes:
    return crypto.kdf(key, _BOX_KEY_PURPOSE, crypto.KEY_BYTES, ch + epoch)


def _make_private(
    signer: Account | DelegatedSigner,
    channel: AccountId,
    post_id: bytes,
    now_ms: int,
    inner: dict[str, object],
    epoch_key: bytes,
    previous: bytes | None,
    key: bytes,
    cap: bytes | None,
    rng: Rng,
) -> Post:
    ch = channel.x25519_public
    epoch = epoch_id(epoch_key, channel)
    if previous is not None and (not isinstance(previous, bytes) or len(previous) != 32):
        raise InvalidValue("a previous epoch ID is 32 bytes")
    padded = padding.pad(_INNER.encode(inner), overhead=_BOX_OVERHEAD)
    nonce = rng(crypto.XNONCE_BYTES)
    box = nonce + crypto.aead_seal(
        _box_key(epoch_key, ch, epoch), nonce, padded, _BOX_AD + ch + epoch + post_id
    )
    body: dict[str, object] = {
        "v": PRIVATE_POST_VERSION,
        "ch": ch,
        "id": post_id,
        "ts": now_ms,
        "ep": epoch,
        "box": box,
        "k": key,
    }
    if previous is not None:
        body["pe"] = previous
    if cap is not None:
        body["cap"] = cap
    unsigned = _PRIVATE_UNSIGNED.encode(body)
    body["sig"] = signer.sign(PRIVATE_POST_DOMAIN, unsigned)
    encoded = _PRIVATE.encode(body)
    if len(encoded) > MAX_POST_BYTES:  # cannot happen within the bounds; kept as a guard
        raise InvalidValue("post too large")
    return _post_of({**body, **inner}, encoded, channel)


def _open_box(obj: dict[str, object], key: bytes, channel: AccountId) -> dict[str, object]:
    """The body of a verified private post whose epoch is ``key``'s (MalformedPost if it
    does not open: the channel signed something that is not a box)."""
    ch = channel.x25519_public
    epoch = obj["ep"]
    box = obj["box"]
    post_id = obj["id"]
    assert isinstance(epoch, bytes) and isinstance(box, bytes) and isinstance(post_id, bytes)
    nonce, sealed = box[: crypto.XNONCE_BYTES], box[crypto.XNONCE_BYTES :]
    try:
        padded = crypto.aead_open(
            _box_key(key, ch, epoch), nonce, sealed, _BOX_AD + ch + epoch + post_id
        )
        inner = _INNER.decode(
            padding.unpad(padded), max_size=_MAX_INNER, max_depth=2, canonical=True
        )
        for tag in inner["tags"]:
            _check_tag(tag)
    except IntegrityError:
        raise MalformedPost("the private post's box does not open under its epoch") from None
    except (DecodeError, SchemaError, TooLarge, InvalidValue) as exc:
        raise MalformedPost(f"the private post's body: {exc}") from None
    return inner


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
        epoch=obj.get("ep"),  # type: ignore[arg-type]
    )


def verify_post(
    data: bytes,
    *,
    channel: AccountId | None = None,
    now_ms: int | None = None,
    namespace: int = CHANNEL_NAMESPACE,
    skew_ms: int = CLOCK_SKEW_MS,
    is_revoked: RevocationLookup | None = None,
    key: bytes | None = None,
) -> Post:
    """Parse and check a post read from ``channel`` (None: any channel, the post's own);
    ``key``: the private channel's epoch key the reader holds (from its invite).

    In order, each with its typed error: the size (:class:`PostTooLarge`, before
    parsing); canonical CBOR of the post's schema and tags without spaces
    (:class:`MalformedPost`); the channel (:class:`WrongChannel`); the time against
    ``now_ms`` if given (:class:`PostFromFuture`); the signer: the channel's key, or
    a chain letting it ``post`` in ``namespace`` at the post's time
    (:class:`BadPostSignature`, caused by the chain's
    :class:`~veil.onion.errors.CapabilityError`); the signature (:class:`BadPostSignature`).
    A private post, then: :class:`PostLocked` if ``key`` is None or not the post's
    epoch's (compared in constant time), :class:`MalformedPost` if its box does not
    open or holds no post body. A public post is read whatever ``key`` is.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedPost("a post is bytes")
    if len(data) > MAX_POST_BYTES:
        raise PostTooLarge(f"post of {len(data)} bytes; the most is {MAX_POST_BYTES}")
    try:
        raw = decode(bytes(data), max_size=MAX_POST_BYTES, max_depth=2, canonical=True)
        private = isinstance(raw, dict) and raw.get("v") == PRIVATE_POST_VERSION
        obj = (_PRIVATE if private else _POST).check(raw)
        for tag in obj.get("tags", ()):
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
        crypto.verify(
            signer, PRIVATE_POST_DOMAIN if private else POST_DOMAIN, encode(unsigned), signature
        )
    except BadSignature:
        raise BadPostSignature("the post's signature does not verify") from None
    if not private:
        return _post_of(obj, bytes(data), owner)
    epoch: bytes = obj["ep"]
    if key is None or not crypto.ct_equal(epoch_id(key, owner), epoch):
        locked = PostLocked(
            "a private post; this reader holds no key"
            if key is None
            else "a private post under another key than the reader's"
        )
        locked.epoch, locked.previous, locked.timestamp_ms = epoch, obj.get("pe"), timestamp
        raise locked
    return _post_of({**obj, **_open_box(obj, key, owner)}, bytes(data), owner)
