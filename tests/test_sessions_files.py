"""Encrypted files of a session (issue 13): every source and sink, the sizes at the
chunk's edges, 200 MB in bounded memory, and every tampering case, each typed."""

from __future__ import annotations

import io
import os
import time

import psutil
import pytest
import trio

from veil.client import MemoryBackend, local_sessions
from veil.onion.errors import (
    FileError,
    FileExtended,
    FileTampered,
    FileTruncated,
    UnknownEpoch,
    WrongSession,
)
from veil.onion.group import FILE_CHUNK
from veil.onion.keys import Account

pytestmark = pytest.mark.trio


async def _pair():  # type: ignore[no-untyped-def]
    backend = MemoryBackend()
    u1, u2 = Account.generate(), Account.generate()
    m1, m2 = local_sessions(u1, backend), local_sessions(u2, backend)
    session = await m1.create_encryption_session([u2.id])
    return session, m2


@pytest.mark.parametrize("size", [0, 1, FILE_CHUNK, FILE_CHUNK + 1, 3 * FILE_CHUNK - 7])
async def test_sizes_round_trip_and_the_other_member_finds_the_session(size: int) -> None:
    session, other = await _pair()
    data = os.urandom(size)
    sealed = await session.encrypt_file(data, "report.pdf")
    assert isinstance(sealed, bytes)
    result = await other.decrypt_file(sealed)  # the session from the header
    assert result.data == data
    assert (result.filename, result.size, result.session_id) == (
        "report.pdf",
        size,
        session.session_id,
    )
    same = await session.decrypt_file(sealed)
    assert same.data == data


async def test_sources_and_sinks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    session, other = await _pair()
    data = os.urandom(5 * FILE_CHUNK + 123)
    plain = tmp_path / "in.bin"
    plain.write_bytes(data)
    # A path in, a path out; the name defaults to the path's.
    written = await session.encrypt_file(plain, out=tmp_path / "in.bin.veil")
    assert written == (tmp_path / "in.bin.veil").stat().st_size
    result = await other.decrypt_file(tmp_path / "in.bin.veil", tmp_path / "out.bin")
    assert result.data is None and result.filename == "in.bin"
    assert (tmp_path / "out.bin").read_bytes() == data
    # A binary file object in and out.
    sink = io.BytesIO()
    await session.encrypt_file(io.BytesIO(data), "x.bin", out=sink)
    back = io.BytesIO()
    await other.decrypt_file(io.BytesIO(sink.getvalue()), back)
    assert back.getvalue() == data

    # An async iterator of bytes (size unknown) in, a trio stream out.
    async def pieces():  # type: ignore[no-untyped-def]
        for i in range(0, len(data), 10_000):
            yield data[i : i + 10_000]

    sealed = await session.encrypt_file(pieces(), "stream.bin")
    assert isinstance(sealed, bytes)
    send, receive = trio.testing.memory_stream_pair()
    received = bytearray()

    async def drain() -> None:
        while chunk := await receive.receive_some(1 << 20):
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await other.decrypt_file(sealed, send)
        await send.aclose()
    assert bytes(received) == data

    # A trio stream in (its header read first to find the session).
    a, b = trio.testing.memory_stream_pair()

    async def feed() -> None:
        await a.send_all(sealed)
        await a.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        result = await other.decrypt_file(b)
    assert result.data == data and result.filename == "stream.bin"


async def test_200_mb_in_bounded_memory_and_a_few_seconds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    session, _other = await _pair()
    size = 200 * 1024 * 1024
    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)
    process = psutil.Process()
    rss0 = process.memory_info().rss
    peak = rss0
    started = time.perf_counter()

    def watch(_done: int, _total: int | None) -> None:
        nonlocal peak
        peak = max(peak, process.memory_info().rss)

    await session.encrypt_file(src, out=tmp_path / "big.veil", progress=watch)
    result = await session.decrypt_file(tmp_path / "big.veil", tmp_path / "big.out", progress=watch)
    elapsed = time.perf_counter() - started
    assert result.size == size
    assert (tmp_path / "big.out").stat().st_size == size
    assert peak - rss0 < 50 * 1024 * 1024, f"RSS grew by {(peak - rss0) >> 20} MB"
    assert elapsed < 20, f"{elapsed:.1f} s"
    with open(tmp_path / "big.out", "rb") as f:
        assert f.read(1 << 20) == block


async def _sealed(size: int = 3 * FILE_CHUNK + 10):  # type: ignore[no-untyped-def]
    session, _ = await _pair()
    data = os.urandom(size)
    return session, data, await session.encrypt_file(data, "t.bin")


CHUNK = FILE_CHUNK + 17


def _body_start(sealed: bytes) -> int:
    from veil.onion.group import read_file_header

    parsed = read_file_header(sealed)
    assert parsed is not None
    return parsed[1] + 24


async def test_tampering_each_is_typed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    session, data, sealed = await _sealed()
    start = _body_start(sealed)
    chunks = [sealed[start + i * CHUNK : start + (i + 1) * CHUNK] for i in range(4)]
    head = sealed[:start]

    async def fails(blob: bytes, error: type[Exception]) -> None:
        with pytest.raises(error):
            await session.decrypt_file(blob)
        out = tmp_path / "never.bin"
        with pytest.raises(error):
            await session.decrypt_file(blob, out)
        assert not out.exists()  # nothing left behind

    flipped = bytearray(sealed)
    flipped[start + 100] ^= 1
    await fails(bytes(flipped), FileTampered)  # a chunk altered
    header = bytearray(sealed)
    header[head.index(b"t.bin")] ^= 1
    await fails(bytes(header), FileTampered)  # the name in the header altered
    await fails(head + chunks[1] + chunks[0] + chunks[2] + chunks[3], FileTampered)  # reordered
    await fails(head + chunks[0] + chunks[2] + chunks[3], FileTampered)  # one dropped
    await fails(head + chunks[0] + chunks[0] + chunks[1] + chunks[2] + chunks[3], FileTampered)
    await fails(sealed[:-1], FileTruncated)  # truncated
    await fails(head + chunks[0], FileTruncated)  # cut at a chunk's edge
    await fails(sealed[: start - 30], FileTruncated)  # cut inside the header
    await fails(sealed + b"\x00", FileExtended)  # extended
    await fails(sealed + chunks[3], FileExtended)
    await fails(b"not a veil file at all" * 10, FileError)
    assert (await session.decrypt_file(sealed)).data == data


async def test_a_file_of_another_session_or_epoch() -> None:
    _session, _data, sealed = await _sealed()
    other_session, _ = await _pair()
    with pytest.raises(WrongSession):
        await other_session.decrypt_file(sealed)
    # A stranger's client cannot find the session's keys.
    stranger = local_sessions(Account.generate(), MemoryBackend())
    with pytest.raises(Exception) as caught:
        await stranger.decrypt_file(sealed)
    assert not isinstance(caught.value, AssertionError)
    # A revoked member, with every key it held, cannot open a file of the new epoch.
    backend = MemoryBackend()
    u1, u2, u3 = (Account.generate() for _ in range(3))
    s1 = await local_sessions(u1, backend).create_encryption_session([u2.id, u3.id])
    s2 = await local_sessions(u2, backend).retrieve_encryption_session(s1.id)
    await s1.revoke_recipients([u2.id])
    with pytest.raises(UnknownEpoch):
        await s2.decrypt_file(await s1.encrypt_file(b"new epoch", "n.txt"))
