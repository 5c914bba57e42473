"""Encrypted files of a session: libsodium's secretstream, in chunks, in constant memory.

Design note
-----------
A file is a header, then one ``crypto_secretstream_xchacha20poly1305`` stream::

    "VEILGF" || 0x01 (version) || u16 BE: header length || header (CBOR) ||
    secretstream header (24 bytes) || chunk || chunk || ... || final chunk

    header = {"sid": session key (32), "epoch": epoch ID (32), "salt": 16 random bytes,
              "name": file name (<= 255 characters), "size": bytes (absent: unknown),
              "chunk": 65536}

The stream's key is ``BLAKE2b(key=K, person="veil/grp-filekey", sid || epoch || salt)``
(``K`` the epoch's key): one key per file, used for nothing else. Every chunk holds
65,536 bytes of the file (17 more encrypted), tagged ``MESSAGE``, but the last, which
holds 0 to 65,536 bytes and is tagged ``FINAL`` (an empty file is one empty final chunk).
The first chunk's associated data is everything before the secretstream header, so the
header (session, epoch, name, size) is authenticated with the first chunk; nothing is
given out before it verifies.

Secretstream chains its chunks (each one's nonce follows from the last), so the reader
tells, each with a typed :class:`~veil.onion.errors.FileError`:

* a file of another session (:class:`~veil.onion.errors.WrongSession`) or of an epoch
  it holds no key of (:class:`~veil.onion.errors.UnknownEpoch`), from the header;
* a tampered chunk or header, or chunks reordered, dropped or repeated in the middle
  (:class:`~veil.onion.errors.FileTampered`: the chunk does not verify in its place;
  secretstream cannot tell these apart, and neither can anyone else);
* a truncated file (:class:`~veil.onion.errors.FileTruncated`): the input ends with no
  ``FINAL`` chunk, or, when the header declares the size, before it;
* an extended file (:class:`~veil.onion.errors.FileExtended`): bytes after ``FINAL``.

Both sides are sans-IO and incremental: :class:`FileEncryptor` and
:class:`FileDecryptor` take bytes as they come (``update``) and give bytes back, and
keep at most one chunk buffered; the client drives them over files, paths and trio
streams. :func:`read_file_header` reads the header alone, so that a client finds the
session of a file before it holds any key (as Seald's ``decryptFile``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import nacl.bindings as sodium
from nacl._sodium import ffi, lib

from .. import crypto
from ..cbor import Field, Schema, encode
from ..crypto import Rng, system_rng
from ..errors import (
    DecodeError,
    FileError,
    FileExtended,
    FileTampered,
    FileTruncated,
    InvalidValue,
    RecordTooLarge,
    SchemaError,
    TooLarge,
    UnknownEpoch,
    WrongSession,
)
from ..keys import GroupId
from .limits import (
    DIGEST_BYTES,
    FILE_CHUNK,
    FILE_KEY_PURPOSE,
    KEY_BYTES,
    MAX_FILE_HEADER,
    MAX_FILE_SIZE,
    MAX_FILENAME,
    SALT_BYTES,
    VERSION,
)

__all__ = [
    "FILE_MAGIC",
    "FileDecryptor",
    "FileEncryptor",
    "FileHeader",
    "file_key",
    "read_file_header",
]

FILE_MAGIC: Final = b"VEILGF"
_PREFIX: Final = struct.Struct(">6sBH")
_ABYTES: Final = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_SS_HEADER: Final = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_TAG_MESSAGE: Final = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: Final = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_SEALED_CHUNK: Final = FILE_CHUNK + _ABYTES
# cffi output buffers are overwritten whole by libsodium: no zero-fill.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)

Buffer = bytes | bytearray | memoryview


def _ss_push(state: Any, chunks: list[Buffer], ad: bytes | None, tag: int) -> bytes:
    """libsodium's secretstream push of each of ``chunks`` (any buffers, read in place:
    pynacl's wrapper takes ``bytes`` only, which would copy every chunk sliced from an
    input), ``ad`` with the first and ``tag`` on each, into one output: one copy in all."""
    total = sum(len(c) for c in chunks) + _ABYTES * len(chunks)
    out = _alloc("unsigned char[]", max(total, 1))
    off = 0
    for chunk in chunks:
        n = len(chunk)
        rc = lib.crypto_secretstream_xchacha20poly1305_push(
            state.statebuf, out + off, ffi.NULL, ffi.from_buffer(chunk), n,
            ad if ad else ffi.NULL, len(ad) if ad else 0, tag,
        )  # fmt: skip
        if rc != 0:  # pragma: no cover (libsodium does not fail a push)
            raise InvalidValue("secretstream push failed")
        ad = None
        off += n + _ABYTES
    return ffi.buffer(out, total)[:]


def _ss_pull(state: Any, out: Any, sealed: Buffer, ad: bytes | None) -> int | None:
    """libsodium's secretstream pull of ``sealed`` (any buffer, read in place) into the
    cffi pointer ``out``: the chunk's tag, or None when it does not verify."""
    clen = len(sealed)
    if clen < _ABYTES:
        return None
    tag = ffi.new("unsigned char *")
    rc = lib.crypto_secretstream_xchacha20poly1305_pull(
        state.statebuf, out, ffi.NULL, tag, ffi.from_buffer(sealed), clen,
        ad if ad else ffi.NULL, len(ad) if ad else 0,
    )  # fmt: skip
    return int(tag[0]) if rc == 0 else None


def _view(data: Buffer) -> memoryview:
    return data.cast("B") if isinstance(data, memoryview) else memoryview(data)


_HEADER: Final = Schema(
    "file header",
    {
        "sid": Field(bytes, size=32),
        "epoch": Field(bytes, size=DIGEST_BYTES),
        "salt": Field(bytes, size=SALT_BYTES),
        "name": Field(str, max_len=MAX_FILENAME),
        "size": Field(int, min=0, max=MAX_FILE_SIZE, required=False),
        "chunk": Field(int, choices={FILE_CHUNK}),
    },
)


def _check_name(name: str) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_FILENAME
        and name not in (".", "..")
        and not any(c in name for c in "/\\\x00")
    )


@dataclass(frozen=True, slots=True)
class FileHeader:
    """A file's header: its session, epoch, name and (if declared) size. Read alone
    (:func:`read_file_header`) it is not yet authenticated; :class:`FileDecryptor`
    gives it out only once the first chunk has verified it."""

    session_id: GroupId
    epoch: bytes
    salt: bytes
    filename: str
    size: int | None
    #: The bytes the first chunk authenticates (magic to the end of the CBOR header).
    prefix: bytes


def file_key(key: bytes, session: bytes, epoch: bytes, salt: bytes) -> bytes:
    """The secretstream key of one file."""
    return crypto.kdf(key, FILE_KEY_PURPOSE, KEY_BYTES, session + epoch + salt)


def read_file_header(data: bytes | bytearray | memoryview) -> tuple[FileHeader, int] | None:
    """The header at the start of ``data`` and the bytes it takes (up to the
    secretstream header, exclusive), or None when ``data`` is too short to tell; a
    :class:`~veil.onion.errors.FileError` for what is not a veil file."""
    view = bytes(data[: _PREFIX.size + MAX_FILE_HEADER])
    if len(view) < _PREFIX.size:
        if not FILE_MAGIC.startswith(view[: len(FILE_MAGIC)]):
            raise FileError("not an encrypted veil file")
        return None
    magic, version, length = _PREFIX.unpack_from(view)
    if magic != FILE_MAGIC:
        raise FileError("not an encrypted veil file")
    if version != VERSION:
        raise FileError(f"unknown encrypted file version {version}")
    if length > MAX_FILE_HEADER:
        raise RecordTooLarge(f"a file header is at most {MAX_FILE_HEADER} bytes")
    end = _PREFIX.size + length
    if len(view) < end:
        return None
    try:
        obj = _HEADER.decode(
            view[_PREFIX.size : end], max_size=MAX_FILE_HEADER, max_depth=1, canonical=True
        )
    except (DecodeError, SchemaError, TooLarge) as exc:
        raise FileError(f"file header: {exc}") from None
    if not _check_name(obj["name"]):
        raise FileError("a file name is 1 to 255 characters, without / \\ or NUL")
    if not crypto.ed25519_is_valid_point(obj["sid"]):
        raise FileError("the file header's session is not a valid group key")
    header = FileHeader(
        session_id=GroupId(obj["sid"]),
        epoch=obj["epoch"],
        salt=obj["salt"],
        filename=obj["name"],
        size=obj.get("size"),
        prefix=view[:end],
    )
    return header, end


class FileEncryptor:
    """Encrypt one file incrementally: :meth:`update` with each piece, then
    :meth:`finish`; each returns the bytes to write (the header comes first)."""

    def __init__(
        self,
        session_id: GroupId,
        epoch: bytes,
        key: bytes,
        filename: str,
        size: int | None = None,
        *,
        rng: Rng = system_rng,
    ) -> None:
        if not isinstance(session_id, GroupId):
            raise InvalidValue("a session is named by its GroupId")
        if len(epoch) != DIGEST_BYTES or len(key) != KEY_BYTES:
            raise InvalidValue("an epoch ID and an epoch key are 32 bytes")
        if not _check_name(filename):
            raise InvalidValue("a file name is 1 to 255 characters, without / \\ or NUL")
        if size is not None and (type(size) is not int or not 0 <= size <= MAX_FILE_SIZE):
            raise InvalidValue(f"a file's size is 0 to {MAX_FILE_SIZE} bytes")
        sid = session_id.ed25519_public
        salt = rng(SALT_BYTES)
        header: dict[str, Any] = {
            "sid": sid,
            "epoch": epoch,
            "salt": salt,
            "name": filename,
            "chunk": FILE_CHUNK,
        }
        if size is not None:
            header["size"] = size
        body = encode(header)
        self._prefix = _PREFIX.pack(FILE_MAGIC, VERSION, len(body)) + body
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self._state, file_key(key, sid, epoch, salt)
        )
        self._pending: bytes | None = self._prefix + stream_header
        self._first = True
        # What follows the chunks pushed so far, at most one chunk: kept back, since only
        # finish() knows the last. Held by reference when it is an immutable whole chunk
        # of the input; a bytearray when pieces had to be joined.
        self._tail: Buffer = b""
        self._size = size
        self._seen = 0
        self._done = False

    def _push(self, chunks: list[Buffer], tag: int) -> bytes:
        if not chunks:
            return b""
        ad = self._prefix if self._first else None
        self._first = False
        return _ss_push(self._state, chunks, ad, tag)

    def _take_pending(self) -> bytes:
        out, self._pending = self._pending or b"", None
        return out

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take the next piece of the file; return what is ready to write."""
        if self._done:
            raise InvalidValue("the file was finished")
        self._seen += len(data)
        if self._size is not None and self._seen > self._size:
            raise InvalidValue(f"more than the declared {self._size} bytes")
        if self._seen > MAX_FILE_SIZE:
            raise InvalidValue(f"a file is at most {MAX_FILE_SIZE} bytes")
        view = _view(data)
        pending = self._take_pending()
        if not view:
            return pending
        chunks: list[Buffer] = []
        tail = self._tail
        if tail:
            if len(tail) < FILE_CHUNK:
                # Complete the chunk kept back with the head of the input.
                if not isinstance(tail, bytearray):
                    tail = bytearray(tail)
                need = FILE_CHUNK - len(tail)
                tail += view[:need]
                view = view[need:]
            if not view:
                self._tail = tail
                return pending
            chunks.append(tail)
        # Whole chunks straight from the input (memoryview slices, no copies); the last
        # piece (1 to FILE_CHUNK bytes) is kept back: only finish() knows it is the last.
        n = len(view)
        start = 0
        while n - start > FILE_CHUNK:
            chunks.append(view[start : start + FILE_CHUNK])
            start += FILE_CHUNK
        out = self._push(chunks, _TAG_MESSAGE)
        rest = view[start:]
        # An immutable input is held by reference; a mutable one may change under us.
        self._tail = rest if rest.readonly else bytes(rest)
        return pending + out if pending else out

    def finish(self) -> bytes:
        """The final chunk (and the header, for a file that had no update)."""
        if self._done:
            raise InvalidValue("the file was finished")
        if self._size is not None and self._seen != self._size:
            raise InvalidValue(f"the file has {self._seen} bytes, not the declared {self._size}")
        self._done = True
        out = self._take_pending() + self._push([self._tail], _TAG_FINAL)
        self._tail = b""
        return out


class FileDecryptor:
    """Decrypt one file incrementally: :meth:`update` with each piece, then
    :meth:`finish` at the end of the input; each returns plaintext (see the module note
    for the errors). ``keys`` maps epoch IDs to the reader's keys; ``session``, when
    given, is the only session accepted."""

    def __init__(self, keys: Mapping[bytes, bytes], *, session: GroupId | None = None) -> None:
        self._keys = keys
        self._session = session
        self._buffer = bytearray()
        self._header: FileHeader | None = None
        self._state: Any = None
        self._verified = False
        self._final = False
        self._failed = False
        self._written = 0

    @property
    def header(self) -> FileHeader | None:
        """The file's header once the first chunk has authenticated it."""
        return self._header if self._verified else None

    def _start(self) -> bool:
        parsed = read_file_header(self._buffer)
        if parsed is None:
            return False
        header, end = parsed
        if len(self._buffer) < end + _SS_HEADER:
            return False
        if self._session is not None and header.session_id != self._session:
            raise WrongSession("the file is of another session")
        key = self._keys.get(header.epoch)
        if key is None:
            raise UnknownEpoch("no key of the file's epoch")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(
            self._state,
            bytes(self._buffer[end : end + _SS_HEADER]),
            file_key(key, header.session_id.ed25519_public, header.epoch, header.salt),
        )
        self._header = header
        del self._buffer[: end + _SS_HEADER]
        return True

    def _next_length(self) -> int:
        """The sealed length of the next chunk: a full one, or with the size declared,
        exactly the final one's when it comes."""
        assert self._header is not None
        size = self._header.size
        if size is None or size - self._written > FILE_CHUNK:
            return _SEALED_CHUNK
        return size - self._written + _ABYTES

    def _fail(self, error: FileError) -> FileError:
        self._failed = True
        return error

    def _pull(self, sealed: Buffer, out: Any) -> int:
        """Pull one sealed chunk into the cffi pointer ``out``; its tag."""
        assert self._header is not None
        ad = None if self._verified else self._header.prefix
        tag = _ss_pull(self._state, out, sealed, ad)
        if tag is None:
            raise self._fail(
                FileTampered("a chunk does not verify: altered, reordered, or cut short")
            )
        self._verified = True
        self._written += len(sealed) - _ABYTES
        if tag not in (_TAG_MESSAGE, _TAG_FINAL):
            raise self._fail(FileTampered(f"a chunk with the unexpected tag {tag}"))
        size = self._header.size
        if size is not None and (tag == _TAG_FINAL) != (self._written == size):
            raise self._fail(FileTampered("the final chunk is not where the size says"))
        self._final = tag == _TAG_FINAL
        return tag

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take the next piece of the file; return the plaintext verified so far."""
        if self._failed:
            raise FileError("the decryption already failed")
        if self._final:
            if len(data):
                raise self._fail(FileExtended("bytes after the final chunk"))
            return b""
        view = _view(data)
        if self._header is None:
            self._buffer += view
            if not self._start():
                return b""
            view = memoryview(bytes(self._buffer))
            self._buffer = bytearray()
        # The plaintext of this update goes into one output (no larger than the input
        # and the partial chunk kept back): one copy in all.
        out = _alloc("unsigned char[]", max(len(self._buffer) + len(view), 1))
        off = 0
        if self._buffer:
            # Complete the partial chunk kept from the last piece with the head of this one.
            need = self._next_length() - len(self._buffer)
            if len(view) < need:
                self._buffer += view
                return b""
            self._buffer += view[:need]
            view = view[need:]
            self._pull(self._buffer, out)
            off += len(self._buffer) - _ABYTES
            self._buffer = bytearray()
        # Whole sealed chunks straight from the input (memoryview slices, no copies). A
        # full sealed chunk may be the last one: it is pulled, and its tag says so.
        start, n = 0, len(view)
        while not self._final and n - start >= (need := self._next_length()):
            self._pull(view[start : start + need], out + off)
            off += need - _ABYTES
            start += need
        if start < n:
            if self._final:
                raise self._fail(FileExtended("bytes after the final chunk"))
            self._buffer += view[start:]
        return ffi.buffer(out, off)[:]

    def finish(self) -> bytes:
        """The end of the input: the last plaintext, or the error of a file cut short."""
        if self._failed:
            raise FileError("the decryption already failed")
        if self._header is None:
            raise self._fail(FileTruncated("the file ends inside its header"))
        if self._final:
            return b""
        if self._header.size is not None or len(self._buffer) < _ABYTES:
            raise self._fail(FileTruncated("the file ends before its final chunk"))
        # The size is not declared: what is left is the final chunk, or the file was cut.
        n = len(self._buffer) - _ABYTES
        out = _alloc("unsigned char[]", max(n, 1))
        tag = self._pull(self._buffer, out)
        plain = ffi.buffer(out, n)[:]
        self._buffer = bytearray()
        if tag != _TAG_FINAL:
            raise self._fail(FileTruncated("the file ends with no final chunk"))
        return plain
