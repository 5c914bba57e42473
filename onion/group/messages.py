"""Encrypted messages of a session: Seald's ``{"sessionId", "data"}`` or the raw data.

Design note
-----------
``encrypt_message`` gives, as Seald's, the JSON text ``{"sessionId":"03...","data":
"<base64>"}`` or, with ``raw=True``, the base64 data alone (RFC 4648, with padding).
The data is::

    0x01 (version) || epoch ID (32) || nonce (24) ||
    XChaCha20-Poly1305(k, nonce, padded inner,
                       ad = "veil/group-msg/v1" NUL || sid || 0x01 || epoch ID)

with ``k = BLAKE2b(key=K, person="veil/grp-msgkey", sid || epoch ID)``, ``K`` the
epoch's key, so a message key is used for nothing else, and a message of one session or
epoch never opens as another's. The nonce is random (192 bits: no counter to keep
across devices). The inner plaintext is the deterministic CBOR map::

    {"body": bytes}                                         (an unsigned message)
    {"body": bytes, "from": author's Ed25519 key, "ts": ms, "sig": signature}

padded with :mod:`veil.onion.padding` so the whole data is a Padmé length of at least
256 bytes. A group chat message is signed by its author, under the domain
``group-msg/v1``, over ``sid || epoch ID || from || ts (u64, BE) || body``: the session
and the epoch are bound, so a member cannot replay a message into another session, and
the reader checks the author against the membership *at the date it signed*
(:meth:`~veil.onion.group.state.SessionState.check_author`): an author revoked after it
wrote stays readable, one revoked before is refused.

Decrypting takes either form. A raw message cannot name its session: where the session
must be found from the message (:func:`message_session_id`), that is a
:class:`~veil.onion.errors.RawMessageHasNoSession`, as in Seald. Checks, cheapest first:
the text's length (before parsing), the JSON form, the base64, the version, the session,
the epoch (:class:`~veil.onion.errors.UnknownEpoch` without its key), the AEAD
(:class:`~veil.onion.errors.MessageTampered`), the padding and inner format
(:class:`~veil.onion.errors.MalformedMessage`), then the author.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .. import crypto, padding
from ..capability import Signer
from ..cbor import Field, Schema, encode
from ..crypto import Rng, system_rng
from ..errors import (
    BadAuthor,
    BadSignature,
    DecodeError,
    IntegrityError,
    InvalidId,
    InvalidValue,
    MalformedMessage,
    MessageTampered,
    RawMessageHasNoSession,
    RecordTooLarge,
    SchemaError,
    TooLarge,
    UnknownEpoch,
    WrongSession,
)
from ..keys import AccountId, GroupId, account_id_of_ed25519
from .limits import (
    DIGEST_BYTES,
    KEY_BYTES,
    MAX_MESSAGE_BODY,
    MAX_MESSAGE_DATA,
    MAX_MESSAGE_TEXT,
    MAX_TIME_MS,
    MESSAGE_AD,
    MESSAGE_DOMAIN,
    MESSAGE_KEY_PURPOSE,
    VERSION,
)
from .state import SessionState

__all__ = [
    "DecryptedMessage",
    "decrypt_message",
    "encrypt_message",
    "message_key",
    "message_session_id",
    "parse_message",
]

_HEAD: Final = 1 + DIGEST_BYTES + crypto.XNONCE_BYTES
_OVERHEAD: Final = _HEAD + crypto.AEAD_TAG_BYTES
_U64: Final = struct.Struct(">Q")

_INNER: Final = Schema(
    "group message",
    {
        "body": Field(bytes, max_len=MAX_MESSAGE_BODY),
        "from": Field(bytes, size=32, required=False),
        "ts": Field(int, min=0, max=MAX_TIME_MS, required=False),
        "sig": Field(bytes, size=crypto.SIG_BYTES, required=False),
    },
)


@dataclass(frozen=True, slots=True)
class DecryptedMessage:
    """A decrypted message: its session, epoch, body and, when signed, its author (the
    Ed25519 key and the account ID, verified) and the date it signed."""

    session_id: GroupId
    epoch: bytes
    body: bytes
    author: bytes | None
    author_id: AccountId | None
    timestamp_ms: int | None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def message_key(key: bytes, session: bytes, epoch: bytes) -> bytes:
    """The AEAD key of an epoch's messages."""
    return crypto.kdf(key, MESSAGE_KEY_PURPOSE, KEY_BYTES, session + epoch)


def _signed(session: bytes, epoch: bytes, author: bytes, ts: int, body: bytes) -> bytes:
    return session + epoch + author + _U64.pack(ts) + body


def encrypt_message(
    session_id: GroupId,
    epoch: bytes,
    key: bytes,
    body: bytes | str,
    *,
    author: Signer | None = None,
    timestamp_ms: int | None = None,
    raw: bool = False,
    rng: Rng = system_rng,
) -> str:
    """``body`` encrypted under the epoch ``epoch`` (its ``key``), signed by ``author``
    at ``timestamp_ms`` when given (a group chat message): the JSON text, or with
    ``raw=True`` the base64 data alone."""
    if not isinstance(session_id, GroupId):
        raise InvalidValue("a session is named by its GroupId")
    if len(epoch) != DIGEST_BYTES or len(key) != KEY_BYTES:
        raise InvalidValue("an epoch ID and an epoch key are 32 bytes")
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if len(data) > MAX_MESSAGE_BODY:
        raise InvalidValue(f"a message body is at most {MAX_MESSAGE_BODY} bytes")
    sid = session_id.ed25519_public
    inner: dict[str, Any] = {"body": data}
    if author is not None:
        if timestamp_ms is None or not 0 <= timestamp_ms <= MAX_TIME_MS:
            raise InvalidValue("a signed message needs its timestamp_ms")
        signature = crypto.sign(
            author.ed25519_secret,
            MESSAGE_DOMAIN,
            _signed(sid, epoch, author.ed25519_public, timestamp_ms, data),
        )
        inner.update({"from": author.ed25519_public, "ts": timestamp_ms, "sig": signature})
    padded = padding.pad(encode(inner), overhead=_OVERHEAD)
    nonce = rng(crypto.XNONCE_BYTES)
    head = bytes((VERSION,)) + epoch + nonce
    sealed = head + crypto.aead_seal(
        message_key(key, sid, epoch), nonce, padded, MESSAGE_AD + sid + head[: 1 + DIGEST_BYTES]
    )
    text = base64.b64encode(sealed).decode("ascii")
    if raw:
        return text
    return json.dumps({"sessionId": str(session_id), "data": text}, separators=(",", ":"))


def parse_message(text: str | bytes) -> tuple[GroupId | None, bytes]:
    """The session a message names (None for a raw message) and its data; typed errors
    for what is not a message (the text's length is checked first)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise MalformedMessage("an encrypted message is text")
    if len(text) > MAX_MESSAGE_TEXT:
        raise RecordTooLarge(f"a message of {len(text)} characters is over {MAX_MESSAGE_TEXT}")
    stripped = text.strip()
    session: GroupId | None = None
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):
            raise MalformedMessage("the message is not JSON") from None
        if (
            not isinstance(obj, dict)
            or set(obj) != {"sessionId", "data"}
            or not isinstance(obj["sessionId"], str)
            or not isinstance(obj["data"], str)
        ):
            raise MalformedMessage('a message is {"sessionId": ..., "data": ...}')
        try:
            session = GroupId.parse(obj["sessionId"])
        except InvalidId as exc:
            raise MalformedMessage(f"sessionId: {exc}") from None
        stripped = obj["data"]
    if len(stripped) > (MAX_MESSAGE_DATA + 2) // 3 * 4:
        raise RecordTooLarge(f"a message's data is at most {MAX_MESSAGE_DATA} bytes")
    try:
        data = base64.b64decode(stripped.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MalformedMessage("the message's data is not base64") from None
    if len(data) < _OVERHEAD or data[0] != VERSION:
        raise MalformedMessage("the message's data is not of version 1")
    return session, data


def message_session_id(text: str | bytes) -> GroupId:
    """The session a message names; :class:`RawMessageHasNoSession` for a raw one."""
    session, _ = parse_message(text)
    if session is None:
        raise RawMessageHasNoSession(
            "a raw message does not name its session: give the session, or use the JSON form"
        )
    return session


def decrypt_message(
    text: str | bytes,
    state: SessionState,
    keys: Mapping[bytes, bytes],
    *,
    now_ms: int,
) -> DecryptedMessage:
    """Decrypt a message of ``state``'s session with the reader's epoch ``keys``
    (:meth:`~veil.onion.group.state.SessionState.epoch_keys`); a signed message's author
    is checked against the membership at its date (see the module note)."""
    session, data = parse_message(text)
    sid = state.session
    if session is not None and session.ed25519_public != sid:
        raise WrongSession("the message is of another session")
    epoch = data[1 : 1 + DIGEST_BYTES]
    nonce = data[1 + DIGEST_BYTES : _HEAD]
    key = keys.get(epoch)
    if key is None:
        raise UnknownEpoch("no key of the message's epoch")
    try:
        padded = crypto.aead_open(
            message_key(key, sid, epoch), nonce, data[_HEAD:], MESSAGE_AD + sid + data[: 1 + 32]
        )
    except IntegrityError:
        raise MessageTampered(
            "the message does not open: altered, or of another session"
        ) from None
    try:
        inner_bytes = padding.unpad(padded)
        inner = _INNER.decode(inner_bytes, max_size=len(inner_bytes), canonical=True)
    except (DecodeError, SchemaError, TooLarge) as exc:
        raise MalformedMessage(f"the message's plaintext: {exc}") from None
    body: bytes = inner["body"]
    signed = [name in inner for name in ("from", "ts", "sig")]
    if any(signed) and not all(signed):
        raise MalformedMessage("a signed message has from, ts and sig")
    author = author_id = ts = None
    if all(signed):
        author, ts = inner["from"], inner["ts"]
        if not crypto.ed25519_is_valid_point(author):
            raise BadAuthor("the author's key is not a valid Ed25519 key")
        try:
            signed_bytes = _signed(sid, epoch, author, ts, body)
            crypto.verify(author, MESSAGE_DOMAIN, signed_bytes, inner["sig"])
        except BadSignature:
            raise BadAuthor("the author's signature does not verify") from None
        state.check_author(author, ts, now_ms=now_ms)
        author_id = account_id_of_ed25519(author)
    return DecryptedMessage(state.session_id, epoch, body, author, author_id, ts)
