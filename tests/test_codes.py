"""One-time codes' rules (veil.client.bot.codes) on the bot's SQLite store, with a
fake clock: no network here (the end-to-end flow is in tests/test_bot_devnet.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.client.bot import (
    APPROVED,
    CANCELED,
    EXPIRED,
    MAX_ATTEMPTS_REACHED,
    PENDING,
    BotStore,
    BotStoreError,
    CodeAlreadyUsed,
    CodeBook,
    InvalidCodeRequest,
    TooManyCodes,
    UnknownTicket,
)
from veil.client.bot.codes import ALPHABET, code_message
from veil.onion.keys import Account

ALICE = str(Account.generate().id)
BOB = str(Account.generate().id)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_767_225_600_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def book(tmp_path: Path, clock: Clock) -> CodeBook:
    return CodeBook(BotStore(tmp_path / "bot"), clock)


def wrong(code: str) -> str:
    return str((int(code) + 1) % 10 ** len(code)).zfill(len(code))


def test_a_code_approves_once(book: CodeBook) -> None:
    new = book.new_code(ALICE, "login")
    assert len(new.code) == 6 and new.code.isdigit()
    assert book.status(new.ticket).status == PENDING
    assert book.check(new.ticket, new.code).status == APPROVED
    assert book.status(new.ticket).status == APPROVED
    with pytest.raises(CodeAlreadyUsed):
        book.check(new.ticket, new.code)  # a reused code is refused


def test_a_sixth_check_is_refused(book: CodeBook) -> None:
    new = book.new_code(ALICE, "login")
    for left in (4, 3, 2, 1):
        result = book.check(new.ticket, wrong(new.code))
        assert (result.status, result.attempts_left) == (PENDING, left)
    assert book.check(new.ticket, wrong(new.code)).status == MAX_ATTEMPTS_REACHED
    # The right code on the sixth check does not approve.
    assert book.check(new.ticket, new.code).status == MAX_ATTEMPTS_REACHED


def test_an_expired_code_is_refused(book: CodeBook, clock: Clock) -> None:
    new = book.new_code(ALICE, "login", ttl_s=60)
    clock.ms += 60_000
    assert book.check(new.ticket, new.code).status == EXPIRED
    assert book.status(new.ticket).status == EXPIRED


def test_failures_survive_a_new_code(book: CodeBook) -> None:
    first = book.new_code(ALICE, "login")
    for _ in range(3):
        book.check(first.ticket, wrong(first.code))
    second = book.new_code(ALICE, "login")
    assert book.status(second.ticket).attempts_left == 2
    assert book.check(second.ticket, wrong(second.code)).attempts_left == 1
    assert book.check(second.ticket, wrong(second.code)).status == MAX_ATTEMPTS_REACHED
    # And no new code for the pair until the failures age out; other purposes are apart.
    with pytest.raises(TooManyCodes):
        book.new_code(ALICE, "login")
    assert book.new_code(ALICE, "payment").ticket
    assert book.new_code(BOB, "login").ticket


def test_an_approval_clears_the_failures(book: CodeBook) -> None:
    first = book.new_code(ALICE, "login")
    for _ in range(3):
        book.check(first.ticket, wrong(first.code))
    assert book.check(first.ticket, first.code).status == APPROVED
    second = book.new_code(ALICE, "login")
    assert book.status(second.ticket).attempts_left == 5


def test_sends_are_limited_per_recipient_and_purpose(book: CodeBook, clock: Clock) -> None:
    for _ in range(5):
        book.new_code(ALICE, "login")
    with pytest.raises(TooManyCodes) as info:
        book.new_code(ALICE, "login")
    assert 0 < info.value.retry_after_s <= 600
    for _ in range(5):
        book.new_code(ALICE, "payment")
    with pytest.raises(TooManyCodes):  # ten in all to one recipient
        book.new_code(ALICE, "reset")
    clock.ms += 600_001
    assert book.new_code(ALICE, "login").ticket


def test_cancel(book: CodeBook) -> None:
    new = book.new_code(ALICE, "login")
    assert book.cancel(new.ticket).status == CANCELED
    assert book.check(new.ticket, new.code).status == CANCELED


def test_codes_are_stored_only_as_keyed_hashes(tmp_path: Path, clock: Clock) -> None:
    store = BotStore(tmp_path / "bot")
    book = CodeBook(store, clock)
    codes = [book.new_code(ALICE, "login", digits=10).code for _ in range(3)]
    store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "bot").iterdir())
    for code in codes:
        assert code.encode() not in raw
    assert oct((tmp_path / "bot" / "code-secret").stat().st_mode & 0o777) == "0o600"


def test_a_ticket_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    new = CodeBook(BotStore(tmp_path / "bot"), clock).new_code(ALICE, "login")
    again = CodeBook(BotStore(tmp_path / "bot"), clock)
    assert again.check(new.ticket, new.code).status == APPROVED


def test_a_readable_secret_is_refused(tmp_path: Path) -> None:
    BotStore(tmp_path / "bot").close()
    (tmp_path / "bot" / "code-secret").chmod(0o644)
    with pytest.raises(BotStoreError):
        BotStore(tmp_path / "bot")


def test_bounds_and_formats(book: CodeBook) -> None:
    for kwargs in ({"digits": 5}, {"digits": 11}, {"ttl_s": 5}, {"ttl_s": 601}):
        with pytest.raises(InvalidCodeRequest):
            book.new_code(ALICE, "login", **kwargs)  # type: ignore[arg-type]
    for purpose in ("", "Login", "a b", "x" * 33):
        with pytest.raises(InvalidCodeRequest):
            book.new_code(BOB, purpose)
    alnum = book.new_code(BOB, "login", digits=8, alphanumeric=True)
    assert len(alnum.code) == 8 and set(alnum.code) <= set(ALPHABET)
    assert book.check(alnum.ticket, " " + alnum.code.lower() + " ").status == APPROVED
    assert alnum.code not in repr(alnum)
    for bad in ("nope", "tk_" + "A" * 22, "x" * 10_000):
        with pytest.raises(UnknownTicket):
            book.status(bad)


def test_the_message_says_what_and_who() -> None:
    text = code_message("123456", "login", "Example Bank (05ab...)", 600)
    assert "123456" in text and "login" in text and "Example Bank" in text and "10 min" in text
