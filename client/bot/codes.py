"""One-time codes (2FA) with Twilio Verify's statuses and NIST SP 800-63B's rules.

Design note
-----------
:class:`CodeBook` keeps the tickets in the bot's database (:mod:`veil.client.bot.store`)
and decides; :class:`veil.client.bot.Bot` sends. The rules (NIST SP 800-63B 5.1.3,
OWASP ASVS V2.7/V2.8):

* the code comes from the CSPRNG (:mod:`secrets`): 6 to 10 digits, or, on request,
  characters of an alphabet without look-alikes (Crockford's base32);
* valid for the ticket's TTL, at most :data:`MAX_TTL_S` (10 minutes, the default); the
  message carrying it lives on the swarm exactly as long, so the code leaves the network
  when it expires;
* single use: a check that approves closes the ticket; a second check of it raises
  :class:`~veil.client.bot.errors.CodeAlreadyUsed`;
* at most :data:`MAX_CHECKS` checks per ticket, then ``max_attempts_reached``;
* failed checks are also counted per (recipient, purpose) over
  :data:`FAILURE_WINDOW_S`, across tickets: a new code does not reset them. At
  :data:`MAX_FAILURES` the pair's open tickets are ``max_attempts_reached`` and no new
  code is sent for it until the oldest failure leaves the window; an approval clears
  the pair's failures;
* stored only as ``HMAC-SHA256(secret, "veil/bot-code/v1" 0 ticket 0 code)`` under the
  secret in the bot's home (a plain hash of 6 digits is reversed by trying a million);
  compared with :func:`hmac.compare_digest`;
* sends limited per (recipient, purpose): :data:`SENDS_PER_WINDOW` per
  :data:`SEND_WINDOW_S`, and per recipient over every purpose, twice that.

Persist, then send: the ticket (``pending``) and the send's timestamp are written in one
transaction before the message leaves, so a ticket a caller was told about, or whose
code a person may have received, survives a crash.

Statuses: ``pending``, ``approved``, ``canceled``, ``expired``, ``max_attempts_reached``.
Expiry is decided when a ticket is looked at (``code_status``, ``check_code``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from veil.client.bot.errors import (
    CodeAlreadyUsed,
    InvalidCodeRequest,
    TooManyCodes,
    UnknownTicket,
)
from veil.client.bot.store import BotStore

__all__ = [
    "ALPHABET",
    "APPROVED",
    "CANCELED",
    "DEFAULT_TTL_S",
    "EXPIRED",
    "MAX_ATTEMPTS_REACHED",
    "MAX_CHECKS",
    "MAX_FAILURES",
    "PENDING",
    "CodeBook",
    "CodeCheck",
    "NewCode",
    "code_message",
]

PENDING: Final = "pending"
APPROVED: Final = "approved"
CANCELED: Final = "canceled"
EXPIRED: Final = "expired"
MAX_ATTEMPTS_REACHED: Final = "max_attempts_reached"

DEFAULT_TTL_S: Final = 600
MIN_TTL_S: Final = 10  # the swarm's shortest message TTL
MAX_TTL_S: Final = 600
MIN_DIGITS: Final = 6
MAX_DIGITS: Final = 10
MAX_CHECKS: Final = 5
MAX_FAILURES: Final = 5
FAILURE_WINDOW_S: Final = 3600
SENDS_PER_WINDOW: Final = 5
SEND_WINDOW_S: Final = 600
#: Crockford's base32 alphabet: no I, L, O, U.
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGITS: Final = "0123456789"
_PURPOSE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_MAC_DOMAIN: Final = b"veil/bot-code/v1\x00"
_TICKET: Final = re.compile(r"tk_[A-Za-z0-9_-]{22}")


@dataclass(frozen=True, slots=True)
class NewCode:
    """A ticket just written, and its code (to send; never stored)."""

    ticket: str
    code: str = ""
    expires_ms: int = 0

    def __repr__(self) -> str:
        return f"NewCode({self.ticket}, expires_ms={self.expires_ms})"


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """The outcome of a check: ``status`` and, while ``pending``, checks left."""

    ticket: str
    status: str
    attempts_left: int = 0

    @property
    def approved(self) -> bool:
        return self.status == APPROVED

    def to_json(self) -> dict[str, object]:
        return {"ticket": self.ticket, "status": self.status, "attempts_left": self.attempts_left}


def code_message(code: str, purpose: str, who: str, ttl_s: int) -> str:
    """The text a person reads: the code, what it is for, who asks, how long it lasts."""
    minutes = max(1, round(ttl_s / 60))
    return (
        f"{code} is your {purpose} code from {who}. It expires in {minutes} min. "
        "Never share it; if you did not ask for it, ignore this message."
    )


def normalize_code(code: str) -> str:
    """What a person typed, as the code is stored: spaces and dashes dropped, upper case."""
    return "".join(c for c in code if c not in " -\t").upper()


class CodeBook:
    """Tickets in ``store``; ``now_ms`` is the clock (ms)."""

    def __init__(self, store: BotStore, now_ms: Callable[[], int]) -> None:
        self.store = store
        self.now_ms = now_ms

    def _mac(self, ticket: str, code: str) -> bytes:
        message = _MAC_DOMAIN + ticket.encode() + b"\x00" + code.encode()
        return hmac.new(self.store.secret, message, hashlib.sha256).digest()

    # --- issuing ---------------------------------------------------------------------------

    def new_code(
        self,
        recipient: str,
        purpose: str,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        digits: int = MIN_DIGITS,
        alphanumeric: bool = False,
    ) -> NewCode:
        """Draw a code and write its ticket (``pending``), checking the request's bounds
        (:class:`InvalidCodeRequest`) and the rate limits (:class:`TooManyCodes`)."""
        if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
            raise InvalidCodeRequest("a purpose is 1 to 32 of a-z 0-9 _ - (e.g. login)")
        if isinstance(digits, bool) or not isinstance(digits, int):
            raise InvalidCodeRequest("digits is a number")
        if not MIN_DIGITS <= digits <= MAX_DIGITS:
            raise InvalidCodeRequest(f"a code has {MIN_DIGITS} to {MAX_DIGITS} characters")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
            raise InvalidCodeRequest("ttl is a number of seconds")
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise InvalidCodeRequest(f"a code lives {MIN_TTL_S} to {MAX_TTL_S} seconds")
        alphabet = ALPHABET if alphanumeric else _DIGITS
        code = "".join(secrets.choice(alphabet) for _ in range(digits))
        ticket = "tk_" + secrets.token_urlsafe(16)
        now = self.now_ms()
        expires = now + round(ttl_s * 1000)
        with self.store.transaction() as db:
            self._check_send_limits(db, recipient, purpose, now)
            db.execute(
                "INSERT INTO codes (ticket, recipient, purpose, code_mac, created_ms, "
                "expires_ms, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ticket, recipient, purpose, self._mac(ticket, code), now, expires, PENDING),
            )
            db.execute(
                "INSERT INTO code_sends (recipient, purpose, at_ms) VALUES (?, ?, ?)",
                (recipient, purpose, now),
            )
        return NewCode(ticket, code, expires)

    def _check_send_limits(self, db: BotStore, recipient: str, purpose: str, now: int) -> None:
        since = now - SEND_WINDOW_S * 1000
        db.execute("DELETE FROM code_sends WHERE at_ms < ?", (since,))
        db.execute("DELETE FROM code_failures WHERE at_ms < ?", (now - FAILURE_WINDOW_S * 1000,))
        count, oldest = db.one(
            "SELECT COUNT(*), MIN(at_ms) FROM code_sends WHERE recipient = ? AND purpose = ?",
            (recipient, purpose),
        )
        if count >= SENDS_PER_WINDOW:
            raise TooManyCodes(
                f"{count} {purpose} codes sent to this recipient in the last "
                f"{SEND_WINDOW_S // 60} min; try later",
                retry_after_s=(oldest + SEND_WINDOW_S * 1000 - now) / 1000,
            )
        total, oldest_any = db.one(
            "SELECT COUNT(*), MIN(at_ms) FROM code_sends WHERE recipient = ?", (recipient,)
        )
        if total >= 2 * SENDS_PER_WINDOW:
            raise TooManyCodes(
                f"{total} codes sent to this recipient in the last {SEND_WINDOW_S // 60} min",
                retry_after_s=(oldest_any + SEND_WINDOW_S * 1000 - now) / 1000,
            )
        failures, first = self._failures(db, recipient, purpose, now)
        if failures >= MAX_FAILURES:
            raise TooManyCodes(
                f"{failures} failed {purpose} checks for this recipient; try later",
                retry_after_s=(first + FAILURE_WINDOW_S * 1000 - now) / 1000,
            )

    def _failures(self, db: BotStore, recipient: str, purpose: str, now: int) -> tuple[int, int]:
        count, first = db.one(
            "SELECT COUNT(*), MIN(at_ms) FROM code_failures "
            "WHERE recipient = ? AND purpose = ? AND at_ms >= ?",
            (recipient, purpose, now - FAILURE_WINDOW_S * 1000),
        )
        return int(count), int(first or now)

    def set_message_hash(self, ticket: str, message_hash: bytes) -> None:
        self.store.execute(
            "UPDATE codes SET message_hash = ? WHERE ticket = ?", (message_hash, ticket)
        )

    def drop(self, ticket: str) -> None:
        """A ticket whose code could not be sent: canceled (its send still counts)."""
        self.store.execute(
            "UPDATE codes SET status = ? WHERE ticket = ? AND status = ?",
            (CANCELED, ticket, PENDING),
        )

    # --- checking --------------------------------------------------------------------------

    def _row(self, db: BotStore, ticket: str) -> tuple[str, str, bytes, int, str, int]:
        if not isinstance(ticket, str) or not _TICKET.fullmatch(ticket):
            raise UnknownTicket("not a ticket of this bot")
        row = db.one(
            "SELECT recipient, purpose, code_mac, expires_ms, status, checks FROM codes "
            "WHERE ticket = ?",
            (ticket,),
        )
        if row is None:
            raise UnknownTicket("not a ticket of this bot")
        return row

    def _settle(
        self, db: BotStore, ticket: str, row: tuple[str, str, bytes, int, str, int], now: int
    ) -> str:
        """The ticket's status now: a pending one past its expiry becomes ``expired``,
        one whose pair ran out of failures ``max_attempts_reached``."""
        recipient, purpose, _mac, expires, status, checks = row
        if status != PENDING:
            return status
        if now >= expires:
            status = EXPIRED
        elif checks >= MAX_CHECKS or self._failures(db, recipient, purpose, now)[0] >= MAX_FAILURES:
            status = MAX_ATTEMPTS_REACHED
        else:
            return PENDING
        db.execute("UPDATE codes SET status = ? WHERE ticket = ?", (status, ticket))
        return status

    def status(self, ticket: str) -> CodeCheck:
        now = self.now_ms()
        with self.store.transaction() as db:
            row = self._row(db, ticket)
            status = self._settle(db, ticket, row, now)
            left = self._left(db, row, now) if status == PENDING else 0
        return CodeCheck(ticket, status, left)

    def _left(self, db: BotStore, row: tuple[str, str, bytes, int, str, int], now: int) -> int:
        failures = self._failures(db, row[0], row[1], now)[0]
        return max(0, min(MAX_CHECKS - row[5], MAX_FAILURES - failures))

    def check(self, ticket: str, code: str) -> CodeCheck:
        """Check ``code`` against ``ticket`` (see the module note for every rule)."""
        if not isinstance(code, str):
            raise InvalidCodeRequest("a code is text")
        typed = normalize_code(code[:64])
        now = self.now_ms()
        with self.store.transaction() as db:
            row = self._row(db, ticket)
            if row[4] == APPROVED:
                raise CodeAlreadyUsed("this ticket's code was used already")
            status = self._settle(db, ticket, row, now)
            if status != PENDING:
                return CodeCheck(ticket, status, 0)
            recipient, purpose, stored, _expires, _status, checks = row
            checks += 1
            good = hmac.compare_digest(self._mac(ticket, typed), stored)
            if good:
                db.execute(
                    "UPDATE codes SET status = ?, checks = ? WHERE ticket = ?",
                    (APPROVED, checks, ticket),
                )
                db.execute(
                    "DELETE FROM code_failures WHERE recipient = ? AND purpose = ?",
                    (recipient, purpose),
                )
                return CodeCheck(ticket, APPROVED, 0)
            db.execute("UPDATE codes SET checks = ? WHERE ticket = ?", (checks, ticket))
            db.execute(
                "INSERT INTO code_failures (recipient, purpose, at_ms) VALUES (?, ?, ?)",
                (recipient, purpose, now),
            )
            updated = (recipient, purpose, stored, row[3], PENDING, checks)
            status = self._settle(db, ticket, updated, now)
            left = self._left(db, updated, now) if status == PENDING else 0
        return CodeCheck(ticket, status, left)

    def cancel(self, ticket: str) -> CodeCheck:
        """Cancel a pending ticket; a closed one keeps its status."""
        now = self.now_ms()
        with self.store.transaction() as db:
            row = self._row(db, ticket)
            status = self._settle(db, ticket, row, now)
            if status == PENDING:
                db.execute("UPDATE codes SET status = ? WHERE ticket = ?", (CANCELED, ticket))
                status = CANCELED
        return CodeCheck(ticket, status, 0)
