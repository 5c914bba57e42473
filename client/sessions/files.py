"""Encrypted files: the core's secretstream driven over bytes, files, paths and streams.

Design note
-----------
:class:`~veil.onion.group.FileEncryptor` and :class:`~veil.onion.group.FileDecryptor`
are sans-IO and incremental; this module feeds them, one 64 KiB piece at a time, from
what a caller has:

* ``bytes`` (or ``bytearray``, ``memoryview``);
* a binary file object (anything with ``read(n)``);
* a path (``str`` or ``os.PathLike``);
* a trio byte stream (``receive_some``) or any async iterator of bytes.

and writes to what it is given as ``out``: a path, a binary file object (``write``), a
trio stream (``send_all``), or nothing, in which case the result is returned as bytes.
Files, paths and file objects are processed in a worker thread a few MiB at a time
(trio stays responsive, and the thread costs nothing per chunk), streams in the trio
thread. Memory is constant: one piece in, one chunk buffered by the core, one out.

A path written by decryption is written next to its final name and renamed into place
only once the whole file has verified, so a tampered file leaves nothing behind.
``progress(done, total)`` (total None when unknown) is called after each batch.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import trio

from veil.onion import group as core
from veil.onion.errors import FileError, FileTruncated, InvalidValue
from veil.onion.keys import GroupId

__all__ = ["DecryptedFile", "FileSource", "decrypt_stream", "encrypt_stream", "peek_header"]

PIECE = core.FILE_CHUNK
#: What is read from a file or sliced from bytes at a time: 16 chunks, so that the
#: engines push and pull most chunks straight from the piece (sealed chunks are 17 bytes
#: longer than plain ones, so 64 KiB reads would cut nearly every one in two).
READ = 16 * PIECE
#: Bytes processed per trip to the worker thread.
BATCH = 64 * PIECE

FileSource = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | AsyncIterable[bytes] | Any
)
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True, slots=True)
class DecryptedFile:
    """A decrypted file, as Seald's result: the data (None when written to ``out``),
    its name, size and session."""

    data: bytes | None
    filename: str
    size: int
    session_id: GroupId


def _is_path(x: Any) -> bool:
    return isinstance(x, str | os.PathLike)


def _is_async(x: Any) -> bool:
    return hasattr(x, "receive_some") or hasattr(x, "__aiter__")


def source_size(data: Any) -> int | None:
    """The size of ``data`` if it can be known without reading it."""
    if isinstance(data, bytes | bytearray | memoryview):
        return memoryview(data).nbytes
    if _is_path(data):
        return os.stat(data).st_size
    if hasattr(data, "fileno") and hasattr(data, "tell"):
        try:
            st = os.fstat(data.fileno())
            if os.path.isfile(f"/proc/self/fd/{data.fileno()}") or st.st_size:
                return st.st_size - data.tell()
        except (OSError, ValueError, AttributeError):
            return None
    return None


def default_name(data: Any) -> str | None:
    if _is_path(data):
        return Path(data).name
    name = getattr(data, "name", None)
    if isinstance(name, str) and name:
        return Path(name).name
    return None


class _Sink:
    """Where output goes (the module note), as plain writes."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.parts: list[bytes] | None = None
        self.file: Any = None
        self.tmp: Path | None = None
        self.written = 0
        if out is None:
            self.parts = []
        elif _is_path(out):
            target = Path(out)
            self.tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            self.file = open(self.tmp, "wb")  # noqa: SIM115 (closed in close())
        elif hasattr(out, "write"):
            self.file = out
        elif not hasattr(out, "send_all"):
            raise InvalidValue("out is a path, a binary file object or a trio stream")

    @property
    def is_stream(self) -> bool:
        return self.out is not None and hasattr(self.out, "send_all") and self.file is None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.written += len(data)
        if self.parts is not None:
            self.parts.append(data)
        else:
            self.file.write(data)

    def commit(self) -> bytes | None:
        if self.tmp is not None:
            self.file.close()
            os.replace(self.tmp, self.out)
            self.tmp = None
        if self.parts is not None:
            return b"".join(self.parts)
        return None

    def abort(self) -> None:
        if self.tmp is not None:
            self.file.close()
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


async def _pieces(data: Any) -> Any:
    """Async pieces of a stream source."""
    if hasattr(data, "receive_some"):
        while True:
            piece = await data.receive_some(PIECE)
            if not piece:
                return
            yield bytes(piece)
    else:
        async for piece in data:
            yield bytes(piece)


async def _run(
    engine: Any, data: Any, sink: _Sink, total: int | None, progress: Progress | None
) -> None:
    """Feed ``engine`` (update/finish) from ``data`` into ``sink``."""
    done = 0
    if _is_async(data):
        async for piece in _pieces(data):
            for i in range(0, len(piece), READ):
                out = engine.update(memoryview(piece)[i : i + READ])
                if sink.is_stream:
                    if out:
                        await sink.out.send_all(out)
                else:
                    sink.write(out)
            done += len(piece)
            if progress:
                progress(done, total)
        out = engine.finish()
        if sink.is_stream:
            if out:
                await sink.out.send_all(out)
        else:
            sink.write(out)
        return
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        reader: Callable[[int], bytes] | None = None
        opened = None
    elif _is_path(data):
        opened = open(data, "rb")  # noqa: SIM115 (closed below)
        reader = opened.read
        view = None
    elif hasattr(data, "read"):
        opened = None
        reader = data.read
        view = None
    else:
        raise InvalidValue("data is bytes, a binary file object, a path or a trio stream")
    pos = 0
    stream_out: list[bytes] = []

    def batch() -> bool:
        nonlocal pos
        moved = 0
        while moved < BATCH:
            if view is not None:
                piece: bytes | memoryview = view[pos : pos + READ]
                pos += len(piece)
            else:
                assert reader is not None
                piece = reader(READ)
            if not piece:
                return False
            out = engine.update(piece)
            if sink.is_stream:
                stream_out.append(out)
            else:
                sink.write(out)
            moved += len(piece)
        return True

    try:
        while True:
            more = (
                await trio.to_thread.run_sync(batch) if total is None or total > BATCH else batch()
            )
            if stream_out:
                await sink.out.send_all(b"".join(stream_out))
                stream_out.clear()
            done = pos if view is not None else done + BATCH
            if progress:
                progress(min(done, total) if total is not None else done, total)
            if not more:
                break
            await trio.lowlevel.checkpoint()
        out = engine.finish()
        if sink.is_stream:
            await sink.out.send_all(out)
        else:
            sink.write(out)
    finally:
        if opened is not None:
            opened.close()


async def encrypt_stream(
    session_id: GroupId,
    epoch: bytes,
    key: bytes,
    data: Any,
    filename: str,
    size: int | None,
    out: Any,
    progress: Progress | None = None,
) -> bytes | int:
    """Encrypt ``data`` into ``out``; the bytes when ``out`` is None, else the bytes
    written."""
    engine = core.FileEncryptor(session_id, epoch, key, filename, size)
    sink = _Sink(out)
    try:
        await _run(engine, data, sink, size, progress)
    except BaseException:
        sink.abort()
        raise
    result = sink.commit()
    return result if result is not None else sink.written


async def decrypt_stream(
    keys: Any,
    data: Any,
    out: Any,
    *,
    session: GroupId | None,
    progress: Progress | None = None,
    first: bytes = b"",
) -> DecryptedFile:
    """Decrypt ``data`` (after ``first``, bytes already read from it) into ``out``."""
    engine = core.FileDecryptor(keys, session=session)
    sink = _Sink(out)
    if first:
        sink.write(engine.update(first)) if not sink.is_stream else None
    total = source_size(data)
    try:
        await _run(engine, data, sink, total, progress)
    except BaseException:
        sink.abort()
        raise
    header = engine.header
    if header is None:  # pragma: no cover (finish() raised)
        raise FileTruncated("the file ends inside its header")
    result = sink.commit()
    return DecryptedFile(
        result,
        header.filename,
        header.size if header.size is not None else sink.written,
        header.session_id,
    )


async def peek_header(data: Any) -> tuple[core.FileHeader, Any, bytes]:
    """The header of an encrypted file (unauthenticated: to find its session), and how
    to read the whole file again: (header, source, bytes already consumed). Bytes and
    paths are re-read; a file object is seeked back if it can be; a stream's consumed
    bytes are returned, to be fed first."""
    limit = 9 + core.MAX_FILE_HEADER
    if isinstance(data, bytes | bytearray | memoryview):
        head = bytes(memoryview(data)[:limit])
        consumed = b""
    elif _is_path(data):
        with open(data, "rb") as f:
            head = f.read(limit)
        consumed = b""
    elif hasattr(data, "read"):
        seekable = hasattr(data, "seekable") and data.seekable()
        start = data.tell() if seekable else 0
        head = data.read(limit)
        if seekable:
            data.seek(start)
            consumed = b""
        else:
            consumed = head
    elif _is_async(data):
        chunks = bytearray()
        iterator = _pieces(data).__aiter__()
        while len(chunks) < limit:
            try:
                chunks += await iterator.__anext__()
            except StopAsyncIteration:
                break
        head = consumed = bytes(chunks)

        async def rest() -> Any:
            async for piece in iterator:
                yield piece

        data = rest()
    else:
        raise InvalidValue("data is bytes, a binary file object, a path or a trio stream")
    parsed = core.read_file_header(head)
    if parsed is None:
        raise FileError("not an encrypted file, or cut short inside its header")
    return parsed[0], data, consumed
