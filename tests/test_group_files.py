"""Encrypted files of a session (issue 13): secretstream in 64 KiB chunks, incremental,
every tampering case typed (veil.onion.group.files)."""

from __future__ import annotations

import pytest

from tests.capabilityutil import counter_rng, seed_of
from veil.onion.errors import (
    FileError,
    FileExtended,
    FileTampered,
    FileTruncated,
    InvalidValue,
    RecordTooLarge,
    UnknownEpoch,
    WrongSession,
)
from veil.onion.group import (
    FILE_CHUNK,
    FileDecryptor,
    FileEncryptor,
    create_session,
    read_file_header,
)
from veil.onion.keys import Account, GroupId

NOW = 1_767_225_600_000
SEALED = FILE_CHUNK + 17
CREATOR = Account(seed_of("group/files"))
NEW = create_session(CREATOR, now_ms=NOW, rng=counter_rng(b"files"))
SESSION = NEW.session_id
KEYS = {NEW.epoch: NEW.epoch_key}


def encrypt(data: bytes, *, declare: bool = True, pieces: int = 7000, name: str = "f.bin") -> bytes:
    enc = FileEncryptor(SESSION, NEW.epoch, NEW.epoch_key, name,
                        len(data) if declare else None)
    out = [enc.update(data[i : i + pieces]) for i in range(0, len(data), pieces)]
    out.append(enc.finish())
    return b"".join(out)


def decrypt(blob: bytes, *, pieces: int = 5000, session: GroupId | None = SESSION) -> bytes:
    dec = FileDecryptor(KEYS, session=session)
    out = [dec.update(blob[i : i + pieces]) for i in range(0, len(blob), pieces)]
    out.append(dec.finish())
    return b"".join(out)


def header_length(blob: bytes) -> int:
    parsed = read_file_header(blob)
    assert parsed is not None
    return parsed[1] + 24


SIZES = [0, 1, FILE_CHUNK - 1, FILE_CHUNK, FILE_CHUNK + 1, 3 * FILE_CHUNK + 5]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("declare", [True, False])
def test_files_round_trip(size: int, declare: bool) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    blob = encrypt(data, declare=declare)
    chunks = size // FILE_CHUNK + (1 if size % FILE_CHUNK or size == 0 else 0)
    assert len(blob) == header_length(blob) + size + 17 * max(chunks, 1)
    assert decrypt(blob) == data
    assert decrypt(blob, pieces=1 if size < 300 else 65_553) == data
    dec = FileDecryptor(KEYS)
    assert dec.header is None
    dec.update(blob)
    dec.finish()
    assert dec.header is not None
    assert (dec.header.filename, dec.header.size, dec.header.session_id) == (
        "f.bin", size if declare else None, SESSION)


def test_the_header_is_given_out_only_once_the_first_chunk_verifies() -> None:
    blob = encrypt(b"x" * (FILE_CHUNK + 10))
    dec = FileDecryptor(KEYS)
    assert dec.update(blob[: header_length(blob) + 100]) == b""
    assert dec.header is None
    header, _ = read_file_header(blob) or (None, 0)
    assert header is not None and header.filename == "f.bin"


def test_a_file_of_another_session_or_epoch() -> None:
    other = create_session(CREATOR, now_ms=NOW, rng=counter_rng(b"other"))
    enc = FileEncryptor(other.session_id, other.epoch, other.epoch_key, "o.bin")
    blob = enc.update(b"data") + enc.finish()
    with pytest.raises(WrongSession):
        decrypt(blob)
    with pytest.raises(UnknownEpoch):
        decrypt(blob, session=None)
    header = read_file_header(blob)
    assert header is not None and header[0].session_id == other.session_id


@pytest.mark.parametrize("declare", [True, False])
def test_tampered_chunks_and_headers(declare: bool) -> None:
    blob = encrypt(b"y" * (2 * FILE_CHUNK + 100), declare=declare)
    start = header_length(blob)
    for where in (start + 3, start + SEALED + 5, len(blob) - 1, start - 1):
        bad = bytearray(blob)
        bad[where] ^= 0x40
        with pytest.raises(FileTampered):
            decrypt(bytes(bad))
    # The file name, inside the header, is authenticated with the first chunk.
    renamed = blob.replace(b"f.bin", b"g.bin", 1)
    with pytest.raises(FileTampered):
        decrypt(renamed)


@pytest.mark.parametrize("declare", [True, False])
def test_reordered_chunks(declare: bool) -> None:
    blob = encrypt(b"a" * FILE_CHUNK + b"b" * FILE_CHUNK + b"c" * 10, declare=declare)
    start = header_length(blob)
    first, second = blob[start : start + SEALED], blob[start + SEALED : start + 2 * SEALED]
    swapped = blob[:start] + second + first + blob[start + 2 * SEALED :]
    with pytest.raises(FileTampered):
        decrypt(swapped)
    dropped = blob[:start] + second + blob[start + 2 * SEALED :]
    with pytest.raises((FileTampered, FileTruncated)):
        decrypt(dropped)


@pytest.mark.parametrize("declare", [True, False])
def test_truncated_files(declare: bool) -> None:
    blob = encrypt(b"z" * (2 * FILE_CHUNK + 100), declare=declare)
    start = header_length(blob)
    # Cut at a chunk boundary: no FINAL chunk.
    for cut in (start, start + SEALED, start + 2 * SEALED):
        with pytest.raises(FileTruncated):
            decrypt(blob[:cut])
    # Cut inside the header.
    for cut in (0, 3, 10, start - 5):
        with pytest.raises(FileTruncated):
            decrypt(blob[:cut])
    # Cut inside the last chunk: with the size declared it is told apart; without, the
    # last chunk fails to verify (it cannot be told from tampering).
    with pytest.raises(FileTruncated if declare else FileTampered):
        decrypt(blob[:-10])
    with pytest.raises(FileTruncated):
        decrypt(blob[: start + 10])  # shorter than a chunk's tag


@pytest.mark.parametrize("declare", [True, False])
def test_extended_files(declare: bool) -> None:
    # A final chunk that is full: whatever follows it is an extension.
    blob = encrypt(b"w" * FILE_CHUNK, declare=declare)
    for extra in (b"\x00", b"more" * 100, bytes(SEALED)):
        with pytest.raises(FileExtended):
            decrypt(blob + extra)
    dec = FileDecryptor(KEYS)
    dec.update(blob)
    with pytest.raises(FileExtended):
        dec.update(b"x")
    # A short final chunk: with the size declared its end is known.
    short = encrypt(b"v" * 100, declare=declare)
    if declare:
        with pytest.raises(FileExtended):
            decrypt(short + b"extra")
    else:
        with pytest.raises((FileExtended, FileTampered)):
            decrypt(short + b"extra")
    # A second stream appended after the first.
    with pytest.raises(FileExtended):
        decrypt(blob + blob)


def test_not_a_veil_file_and_header_limits() -> None:
    with pytest.raises(FileError):
        decrypt(b"PK\x03\x04 a zip file" * 10)
    blob = encrypt(b"x")
    with pytest.raises(FileError):
        decrypt(blob[:6] + b"\x02" + blob[7:])
    with pytest.raises(RecordTooLarge):
        read_file_header(b"VEILGF\x01\xff\xff" + bytes(100))
    assert read_file_header(b"VEIL") is None


def test_a_failed_decryption_stays_failed() -> None:
    blob = bytearray(encrypt(b"x" * 100))
    blob[-1] ^= 1
    dec = FileDecryptor(KEYS)
    with pytest.raises(FileTampered):
        dec.update(bytes(blob))
        dec.finish()
    with pytest.raises(FileError):
        dec.update(b"")
    with pytest.raises(FileError):
        dec.finish()


def test_the_encryptor_refuses_misuse() -> None:
    with pytest.raises(InvalidValue):
        FileEncryptor(SESSION, NEW.epoch, NEW.epoch_key, "../etc/passwd")
    for name in ("", ".", "..", "a\x00b", "a" * 256):
        with pytest.raises(InvalidValue):
            FileEncryptor(SESSION, NEW.epoch, NEW.epoch_key, name)
    enc = FileEncryptor(SESSION, NEW.epoch, NEW.epoch_key, "n", size=3)
    with pytest.raises(InvalidValue):
        enc.update(b"four")
    enc = FileEncryptor(SESSION, NEW.epoch, NEW.epoch_key, "n", size=3)
    enc.update(b"ab")
    with pytest.raises(InvalidValue):
        enc.finish()
    enc = FileEncryptor(SESSION, NEW.epoch, NEW.epoch_key, "n")
    enc.finish()
    with pytest.raises(InvalidValue):
        enc.update(b"late")


def test_memory_stays_within_a_chunk() -> None:
    """The decryptor keeps at most one sealed chunk buffered, however the input is cut."""
    enc = FileEncryptor(SESSION, NEW.epoch, NEW.epoch_key, "big")
    dec = FileDecryptor(KEYS)
    piece = bytes(range(256)) * 1000  # 256,000 bytes
    total = 0
    for _ in range(40):  # about 10 MB
        sealed = enc.update(piece)
        assert len(enc._tail) <= FILE_CHUNK
        total += len(dec.update(sealed))
        assert len(dec._buffer) < SEALED
    total += len(dec.update(enc.finish()))
    total += len(dec.finish())
    assert total == 40 * len(piece)


def test_any_cut_of_the_input_gives_the_same_file() -> None:
    """Whole chunks are pushed and pulled straight from the input (no copies); however
    the input is cut, and whatever the caller does to a mutable piece after update(),
    the plaintext comes back whole."""
    import random

    rnd = random.Random(13)
    data = bytes(rnd.getrandbits(8) for _ in range(5 * FILE_CHUNK + 123))
    for size in (None, len(data)):
        enc = FileEncryptor(SESSION, NEW.epoch, NEW.epoch_key, "cut", size)
        sealed = bytearray()
        pos = 0
        while pos < len(data):
            n = rnd.choice([1, 17, FILE_CHUNK - 1, FILE_CHUNK, FILE_CHUNK + 1, 3 * FILE_CHUNK])
            piece = bytearray(data[pos : pos + n])
            sealed += enc.update(memoryview(piece) if n % 2 else piece)
            piece[:] = bytes(len(piece))  # the caller reuses its buffer
            pos += n
        sealed += enc.finish()
        for _ in range(3):
            dec = FileDecryptor(KEYS)
            plain = bytearray()
            pos = 0
            while pos < len(sealed):
                n = rnd.choice([1, 40, SEALED - 1, SEALED, SEALED + 1, 4 * SEALED])
                plain += dec.update(memoryview(sealed)[pos : pos + n])
                pos += n
            plain += dec.finish()
            assert plain == data
