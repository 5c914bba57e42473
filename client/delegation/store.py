"""Persisted delegated sessions, as DIDSession's ``get``/``hasSessionFor``/``remove``.

Design note
-----------
A service that authorizes a session for each of its jobs should not mint a new key at
every start: :class:`SessionStore` keeps sessions in the home, keyed by account and
resources, and :meth:`~SessionStore.get` reuses a live one (not expired, not revoked by
this home, and with at least ``min_remaining_s`` left) or authorizes a new one, which
it records as issued (:mod:`veil.client.delegation.issued`) and stores.

The key is the account ID and the sorted ``OWNER:NAMESPACES:ACTIONS`` texts of the
resources asked for, so that a job that asks for less never gets a session that can do
more.

The file, ``HOME/sessions.json``, holds session keys: it is protected as the identity
is (:mod:`veil.client.home`): mode 0600 from its first instant, written atomically, a
file readable by others refused. When the home's seed is sealed under a passphrase, so
is this file, whole::

    {"format": "veil-sessions", "version": 1,
     "protection": {"kdf": "argon2id13", "opslimit": ..., "memlimit": ...,
                    "salt": "<32 hex>", "nonce": "<48 hex>", "ciphertext": "<hex>"}}

with the key derived from the passphrase by argon2id at the identity's cost, and a new
nonce at every write (the salt, so the key, is kept while the file lives: one derivation
per :class:`SessionStore`, not per write); XChaCha20-Poly1305 with the format as
associated data. In clear (a home without a passphrase) ``"sessions"`` holds the list
directly. Each entry is ``{"account": "05...", "resources": [...], "session":
"veil-session-v1:..."}``.

Two processes: a read-modify-write holds an exclusive ``flock`` on
``HOME/.sessions.lock``, so two ``get`` calls at once do not lose each other's session.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from veil.client.delegation.issued import record_issued
from veil.client.delegation.session import (
    DEFAULT_EXPIRES_IN_S,
    DelegatedSession,
    ResourceLike,
    authorize,
    normalize_resources,
)
from veil.client.errors import BadSessionFile, InvalidArgument, PassphraseRequired, WrongPassphrase
from veil.client.files import write_atomically
from veil.client.home import KDF_NAME, SALT_BYTES, Home, KdfLimits, check_private, derive_key
from veil.client.state import open_state
from veil.onion import crypto
from veil.onion.capability import format_resource
from veil.onion.errors import IntegrityError, InvalidId, InvalidSession
from veil.onion.keys import Account, AccountId
from veil.onion.wallclock import wall_clock_ms

__all__ = ["SESSIONS_FORMAT", "SessionStore"]

SESSIONS_FORMAT = "veil-sessions"
SESSIONS_VERSION = 1
#: A sessions file of a few hundred sessions is well under this.
MAX_SESSIONS_BYTES = 4 * 1024 * 1024
_AD = f"{SESSIONS_FORMAT}/{SESSIONS_VERSION}".encode()


@dataclass(frozen=True, slots=True)
class _Entry:
    account: str
    resources: tuple[str, ...]
    session: str

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "resources": list(self.resources), "session": self.session}


def _account_id(account: Account | AccountId | str) -> AccountId:
    if isinstance(account, Account):
        return account.id
    if isinstance(account, AccountId):
        return account
    try:
        return AccountId.parse(account)
    except InvalidId as exc:
        raise InvalidArgument(f"not an account ID: {exc}") from None


def resource_key(
    account: AccountId, resources: ResourceLike | Iterable[ResourceLike]
) -> tuple[str, ...]:
    """The store's key for ``resources`` of ``account`` (``self`` is ``account``)."""
    wanted = normalize_resources(resources, self_owner=account)
    return tuple(sorted({format_resource(r) for r in wanted}))


class SessionStore:
    """Delegated sessions kept in a home (see the module note).

    ``passphrase`` opens (and seals) the file when the home's seed is sealed; without it
    such a store raises :class:`PassphraseRequired`. ``min_remaining_s``: a stored
    session with less time left than this is not reused."""

    def __init__(
        self,
        home: Home | str | os.PathLike[str],
        *,
        passphrase: str | None = None,
        min_remaining_s: float = 60.0,
    ) -> None:
        self.home = home if isinstance(home, Home) else Home(home)
        self.path = self.home.sessions_path
        self._lock_path = self.home.path / ".sessions.lock"
        self._passphrase = passphrase
        self.min_remaining_ms = int(min_remaining_s * 1000)
        #: (salt, limits, key) of the sealed file, derived once.
        self._key: tuple[bytes, KdfLimits, bytes] | None = None

    # --- DIDSession's three ------------------------------------------------------------

    def get(
        self,
        account: Account,
        resources: ResourceLike | Iterable[ResourceLike],
        expires_in: float | datetime.timedelta = DEFAULT_EXPIRES_IN_S,
        *,
        statement: str | None = None,
    ) -> DelegatedSession:
        """A live stored session of ``account`` for exactly ``resources``, or a new one
        (authorized for ``expires_in``, recorded as issued, stored). Blocking."""
        if not isinstance(account, Account):
            raise InvalidArgument("get() takes the account (with its seed): it may authorize")
        key = resource_key(account.id, resources)
        with self._locked():
            entries = self._read()
            live = self._live(entries, account.id, key)
            if live is not None:
                return live
            session = authorize(account, list(key), expires_in, statement=statement)
            self._record(session)
            kept = [e for e in entries if not (e.account == str(account.id) and e.resources == key)]
            kept.append(_Entry(str(account.id), key, session.serialize()))
            self._write(kept)
            return session

    def has_session_for(
        self,
        account: Account | AccountId | str,
        resources: ResourceLike | Iterable[ResourceLike],
    ) -> bool:
        """Whether :meth:`get` would reuse a stored session."""
        aid = _account_id(account)
        return self._live(self._read(), aid, resource_key(aid, resources)) is not None

    def remove(self, account: Account | AccountId | str) -> int:
        """Forget every stored session of ``account`` (they are not revoked: see
        :meth:`veil.client.veil_client.VeilClient.revoke`); how many there were."""
        aid = str(_account_id(account))
        with self._locked():
            entries = self._read()
            kept = [e for e in entries if e.account != aid]
            if len(kept) != len(entries):
                self._write(kept)
            return len(entries) - len(kept)

    def sessions(self, account: Account | AccountId | str | None = None) -> list[DelegatedSession]:
        """Every stored session (of ``account`` if given), expired ones included."""
        aid = None if account is None else str(_account_id(account))
        return [
            DelegatedSession.from_string(e.session)
            for e in self._read()
            if aid is None or e.account == aid
        ]

    def reseal(self, change: Callable[[], object], new_passphrase: str | None) -> None:
        """Keep the stored sessions across a change of the home's passphrase: read them
        (with this store's passphrase), run ``change`` (which stores the seed under
        ``new_passphrase``, e.g. :meth:`Home.set_passphrase`), then write them sealed
        under the new one (in clear if it is None). ``change`` runs even when no file
        exists. Blocking."""
        with self._locked():
            entries = self._read() if self.path.exists() else None
            change()
            self._passphrase = new_passphrase
            self._key = None
            if entries is not None:
                self._write(entries)

    # --- internals -------------------------------------------------------------------------

    def _live(
        self, entries: list[_Entry], account: AccountId, key: tuple[str, ...]
    ) -> DelegatedSession | None:
        now = wall_clock_ms()
        for entry in entries:
            if entry.account != str(account) or entry.resources != key:
                continue
            try:
                session = DelegatedSession.from_string(entry.session)
            except InvalidSession:
                continue
            if session.expires_ms - now < self.min_remaining_ms:
                continue
            if self._revoked(session):
                continue
            return session
        return None

    def _revoked(self, session: DelegatedSession) -> bool:
        if not self.home.state_path.exists():
            return False
        with contextlib.closing(open_state(self.home)) as state:
            return any(state.is_delegation_revoked(link.digest) for link in session.chain.links)

    def _record(self, session: DelegatedSession) -> None:
        with contextlib.closing(open_state(self.home)) as state:
            record_issued(state, session)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.ensure()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - not POSIX: no lock
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _sealed_limits(self) -> KdfLimits | None:
        if not self.home.has_identity():
            return None
        return self.home.kdf_limits()

    def _need_passphrase(self) -> str:
        if self._passphrase is None:
            raise PassphraseRequired(
                f"the delegated sessions in {self.path} are sealed under the home's passphrase"
            )
        return self._passphrase

    def _derive(self, salt: bytes, limits: KdfLimits) -> bytes:
        if self._key is not None and self._key[0] == salt and self._key[1] == limits:
            return self._key[2]
        key = derive_key(self._need_passphrase(), salt, limits)
        self._key = (salt, limits, key)
        return key

    def _read(self) -> list[_Entry]:
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BadSessionFile(f"{self.path} is not a regular file")
            check_private(self.path, st)
            raw = f.read(MAX_SESSIONS_BYTES + 1)
        if len(raw) > MAX_SESSIONS_BYTES:
            raise BadSessionFile(f"{self.path} is too large to be a sessions file")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadSessionFile(f"{self.path} is damaged: not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != SESSIONS_FORMAT:
            raise BadSessionFile(f"{self.path} is not a veil sessions file")
        if doc.get("version") != SESSIONS_VERSION:
            raise BadSessionFile(f"{self.path} has an unknown version {doc.get('version')!r}")
        items = self._unseal(doc["protection"]) if "protection" in doc else doc.get("sessions")
        return self._entries(items)

    def _entries(self, items: object) -> list[_Entry]:
        if not isinstance(items, list):
            raise BadSessionFile(f"{self.path} is damaged: no list of sessions")
        out = []
        for item in items:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("account"), str)
                or not isinstance(item.get("session"), str)
                or not isinstance(item.get("resources"), list)
                or not all(isinstance(r, str) for r in item["resources"])
            ):
                raise BadSessionFile(f"{self.path} is damaged: a bad session entry")
            out.append(_Entry(item["account"], tuple(item["resources"]), item["session"]))
        return out

    def _unseal(self, p: object) -> object:
        if not isinstance(p, dict) or p.get("kdf") != KDF_NAME:
            raise BadSessionFile(f"{self.path} is damaged: bad protection record")
        try:
            limits = KdfLimits(p["opslimit"], p["memlimit"])
            salt = bytes.fromhex(p["salt"])
            nonce = bytes.fromhex(p["nonce"])
            ciphertext = bytes.fromhex(p["ciphertext"])
        except (KeyError, TypeError, ValueError):
            raise BadSessionFile(f"{self.path} is damaged: bad protection record") from None
        if len(salt) != SALT_BYTES or len(nonce) != crypto.XNONCE_BYTES:
            raise BadSessionFile(f"{self.path} is damaged: bad protection record")
        key = self._derive(salt, limits)
        try:
            plain = crypto.aead_open(key, nonce, ciphertext, _AD)
        except IntegrityError:
            raise WrongPassphrase(
                f"wrong passphrase (or a damaged sessions file {self.path})"
            ) from None
        try:
            return json.loads(plain.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadSessionFile(f"{self.path} is damaged: not JSON inside") from None

    def _write(self, entries: list[_Entry]) -> None:
        items = [e.to_json() for e in entries]
        doc: dict[str, Any] = {"format": SESSIONS_FORMAT, "version": SESSIONS_VERSION}
        limits = self._sealed_limits()
        if limits is None:
            doc["sessions"] = items
        else:
            if self._key is not None and self._key[1] == limits:
                salt = self._key[0]
            else:
                # A new file: make sure it is sealed under the home's passphrase, not a
                # mistyped one (then nothing could open it).
                self.home.check_passphrase(self._need_passphrase())
                salt = secrets.token_bytes(SALT_BYTES)
            key = self._derive(salt, limits)
            nonce = secrets.token_bytes(crypto.XNONCE_BYTES)
            plain = json.dumps(items).encode()
            doc["protection"] = {
                "kdf": KDF_NAME,
                "opslimit": limits.opslimit,
                "memlimit": limits.memlimit,
                "salt": salt.hex(),
                "nonce": nonce.hex(),
                "ciphertext": crypto.aead_seal(key, nonce, plain, _AD).hex(),
            }
        self.home.ensure()
        write_atomically(self.path, (json.dumps(doc, indent=1) + "\n").encode(), mode=0o600)
