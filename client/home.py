"""The client's home directory and the identity stored in it.

A home is one directory (``veil --home DIR``, ``VEIL_HOME``, or the platform's user data
directory) that only its owner may enter: it is created with mode 0700. It holds the
account's seed (``identity.json``) and the client's state (``state.sqlite3``, see
:mod:`veil.client.state`).

The identity file, ``identity.json``, is small versioned JSON, mode 0600. Version 2 holds
either the seed in clear::

    {"format": "veil-identity", "version": 2,
     "account_id": "05...", "seed": "<64 hex digits>"}

or the seed sealed under a passphrase::

    {"format": "veil-identity", "version": 2, "account_id": "05...",
     "protection": {"kdf": "argon2id13", "opslimit": 3, "memlimit": 268435456,
                    "salt": "<32 hex>", "nonce": "<48 hex>", "ciphertext": "<96 hex>"}}

Version 1 (the first one, always a clear seed) is still read; writes are version 2.

* ``version`` lets the format grow without guessing. A reader refuses a version it does
  not know instead of misreading it.
* ``account_id`` is redundant with the seed on purpose: it lets ``veil id show`` answer
  without the passphrase once the seed is sealed, and it catches a damaged seed (any 32
  bytes are a valid seed, so damage would otherwise go unnoticed and silently become
  another account).

Passphrase protection (design note)
-----------------------------------
The key is argon2id (libsodium's ``crypto_pwhash``, version 1.3) of the passphrase
(Unicode NFKC, then UTF-8, so the same phrase typed on two keyboards gives the same
key) with a random 16-byte salt. The seed is sealed with XChaCha20-Poly1305 under that
key, a random 24-byte nonce, and associated data naming the format and the account ID:
moving a sealed seed under another account ID, or changing any KDF parameter, makes it
fail to open rather than give another account. A wrong passphrase and a damaged record
are the same failure to an AEAD; it is reported as :class:`WrongPassphrase`.

The cost is :data:`KDF_MODERATE` by default (libsodium's MODERATE: 3 passes over
256 MiB, about a second): a passphrase is typed once per command, and an attacker who
stole the file pays that per guess. :data:`KDF_INTERACTIVE` (64 MiB) suits small
machines; :data:`KDF_MIN` exists for tests only. Parameters read from a file are bounded
(:data:`MAX_OPSLIMIT`, :data:`MAX_MEMLIMIT`), so a damaged file cannot make a reader
allocate gigabytes or spin for minutes.

Files
-----
Writes are atomic and durable, mode 0600 from the first instant, and a new identity
never replaces one written at the same moment by another ``veil id new``
(:func:`veil.client.files.write_atomically`).

Reads refuse a secret file that others could read, as ssh refuses such a private key:
the check is made on the opened file (``fstat``), so it is about the bytes actually
read. A file's size is checked before it is parsed.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.client.errors import (
    BadIdentityFile,
    BadPassphrase,
    HomeError,
    IdentityExists,
    InsecureFile,
    InvalidArgument,
    NoIdentity,
    PassphraseRequired,
    WrongPassphrase,
)
from veil.client.files import write_atomically
from veil.onion import crypto
from veil.onion.errors import IntegrityError, InvalidId
from veil.onion.keys import Account, AccountId

IDENTITY_FILE = "identity.json"
STATE_FILE = "state.sqlite3"
SESSIONS_FILE = "sessions.json"
IDENTITY_FORMAT = "veil-identity"
#: The version written; every version from 1 to this one is read.
IDENTITY_VERSION = 2
# An identity file is about 500 bytes; anything much larger is not one, and is refused
# before it is read into memory.
MAX_IDENTITY_BYTES = 64 * 1024

#: The KDF name in a sealed record: argon2id, version 0x13, as libsodium implements it.
KDF_NAME = "argon2id13"
SALT_BYTES = 16  # crypto_pwhash_argon2id_SALTBYTES
SEED_BYTES = 32
#: Passphrases longer than this (in characters) are refused: a typo'd paste, not a phrase.
MAX_PASSPHRASE_CHARS = 1024

_POSIX = os.name == "posix"


# libsodium's constants (crypto_pwhash_argon2id_*), written out so that importing this
# module does not load libsodium's password-hashing module; a test checks they agree.
MIN_OPSLIMIT = 1
MIN_MEMLIMIT = 8192
#: Bounds on what a file may ask for: libsodium's SENSITIVE is 4 passes over 1 GiB.
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 1 << 30


@dataclass(frozen=True, slots=True)
class KdfLimits:
    """Argon2id's cost: ``opslimit`` passes over ``memlimit`` bytes of memory."""

    opslimit: int
    memlimit: int

    def __post_init__(self) -> None:
        if not MIN_OPSLIMIT <= self.opslimit <= MAX_OPSLIMIT:
            raise InvalidArgument(f"opslimit must be in [{MIN_OPSLIMIT}, {MAX_OPSLIMIT}]")
        if not MIN_MEMLIMIT <= self.memlimit <= MAX_MEMLIMIT:
            raise InvalidArgument(f"memlimit must be in [{MIN_MEMLIMIT}, {MAX_MEMLIMIT}]")


#: For tests only: the cheapest argon2id that libsodium accepts.
KDF_MIN = KdfLimits(MIN_OPSLIMIT, MIN_MEMLIMIT)
#: libsodium's INTERACTIVE: 2 passes over 64 MiB (about 0.1 s here).
KDF_INTERACTIVE = KdfLimits(2, 64 << 20)
#: libsodium's MODERATE: 3 passes over 256 MiB (about 1 s here). The default.
KDF_MODERATE = KdfLimits(3, 256 << 20)
#: libsodium's SENSITIVE: 4 passes over 1 GiB (several seconds).
KDF_SENSITIVE = KdfLimits(4, 1 << 30)
DEFAULT_KDF = KDF_MODERATE
#: The named costs a user may choose (``veil id new --passphrase --kdf NAME``).
KDF_PRESETS: dict[str, KdfLimits] = {
    "interactive": KDF_INTERACTIVE,
    "moderate": KDF_MODERATE,
    "sensitive": KDF_SENSITIVE,
}


@dataclass(frozen=True, slots=True)
class _Sealed:
    """The ``protection`` object of a version 2 record, decoded."""

    limits: KdfLimits
    salt: bytes
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class _Record:
    """An identity record: the account ID and either the seed or the sealed seed."""

    account_id: str
    seed: bytes | None
    sealed: _Sealed | None


class Home:
    """The client's home directory. Creating a ``Home`` touches nothing on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"Home({str(self.path)!r})"

    @property
    def identity_path(self) -> Path:
        return self.path / IDENTITY_FILE

    @property
    def state_path(self) -> Path:
        """The client's SQLite state (:class:`veil.client.state.ClientState`)."""
        return self.path / STATE_FILE

    def ensure(self) -> None:
        """Create the home (and missing parents) if needed; a new home gets mode 0700.

        An existing directory's mode is left alone: the user chose it, and the secret
        files in it are 0600 whatever the directory is.
        """
        if self.path.is_dir():
            return
        try:
            self.path.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not self.path.is_dir():
                raise HomeError(f"{self.path} exists and is not a directory") from None
            return  # someone else created it at the same moment
        # mkdir's mode is filtered by the umask; set it exactly.
        os.chmod(self.path, 0o700)

    def has_identity(self) -> bool:
        return self.identity_path.exists()

    def save_identity(
        self,
        account: Account,
        *,
        overwrite: bool = False,
        passphrase: str | None = None,
        kdf: KdfLimits = DEFAULT_KDF,
    ) -> Path:
        """Store ``account``'s seed, sealed under ``passphrase`` if given; return the path.

        Raises :class:`IdentityExists` if an identity is stored and not ``overwrite``;
        in that case nothing on disk changes. Raises :class:`BadPassphrase` for an empty
        or overlong passphrase. ``kdf`` is the argon2id cost (ignored without a
        passphrase); deriving the key takes that long and that much memory.
        """
        record: dict[str, Any] = {
            "format": IDENTITY_FORMAT,
            "version": IDENTITY_VERSION,
            "account_id": str(account.id),
        }
        if passphrase is None:
            record["seed"] = account.seed.hex()
        else:
            record["protection"] = _seal(account, passphrase, kdf)
        self.ensure()
        data = (json.dumps(record, indent=1) + "\n").encode()
        try:
            write_atomically(self.identity_path, data, mode=0o600, overwrite=overwrite)
        except FileExistsError:
            raise IdentityExists(f"an identity already exists in {self.identity_path}") from None
        return self.identity_path

    def load_identity(self, passphrase: str | None = None) -> Account:
        """The stored account; ``passphrase`` opens a sealed seed (ignored otherwise).

        Raises :class:`NoIdentity`, :class:`InsecureFile` (readable by group or others,
        or owned by another user), :class:`BadIdentityFile`, and for a sealed seed
        :class:`PassphraseRequired` (``passphrase`` is None) or :class:`WrongPassphrase`.
        """
        record = self._read_identity_record()
        if record.sealed is not None:
            if passphrase is None:
                raise PassphraseRequired(f"the seed in {self.identity_path} needs its passphrase")
            return self._checked(_unseal(record.sealed, record.account_id, passphrase), record)
        assert record.seed is not None
        return self._checked(record.seed, record)

    def is_protected(self) -> bool:
        """True if the stored seed is sealed under a passphrase (:class:`NoIdentity` if
        there is no identity)."""
        return self._read_identity_record().sealed is not None

    def kdf_limits(self) -> KdfLimits | None:
        """The argon2id cost that seals the stored seed; None if it is stored in clear
        (:class:`NoIdentity` if there is no identity). Other secrets of the home (the
        persisted delegated sessions) are sealed at the same cost."""
        sealed = self._read_identity_record().sealed
        return None if sealed is None else sealed.limits

    def check_passphrase(self, passphrase: str) -> None:
        """:class:`WrongPassphrase` unless ``passphrase`` opens the sealed seed (nothing
        to check for a seed in clear). Costs one key derivation."""
        record = self._read_identity_record()
        if record.sealed is not None:
            self._checked(_unseal(record.sealed, record.account_id, passphrase), record)

    @property
    def sessions_path(self) -> Path:
        """The persisted delegated sessions (:mod:`veil.client.delegation.store`)."""
        return self.path / SESSIONS_FILE

    def account_id(self) -> AccountId:
        """The stored account's ID, without the passphrase.

        A clear seed is checked against the stored ID (:class:`BadIdentityFile` if they
        differ); a sealed one cannot be, and is checked when it is opened.
        """
        record = self._read_identity_record()
        if record.seed is not None:
            return self._checked(record.seed, record).id
        try:
            return AccountId.parse(record.account_id)
        except InvalidId as e:
            raise BadIdentityFile(f"{self.identity_path} is damaged: {e}") from None

    def set_passphrase(
        self, current: str | None, new: str | None, *, kdf: KdfLimits = DEFAULT_KDF
    ) -> None:
        """Seal the seed under ``new`` (a fresh salt and nonce), or store it in clear if
        ``new`` is None; ``current`` opens it if it is sealed now.

        Raises what :meth:`load_identity` raises (so a wrong ``current`` changes
        nothing) and :class:`BadPassphrase`. The file is replaced atomically.
        """
        account = self.load_identity(current)
        self.save_identity(account, overwrite=True, passphrase=new, kdf=kdf)

    def _checked(self, seed: bytes, record: _Record) -> Account:
        """The account of ``seed``, if it is the one ``record`` names."""
        account = Account(seed)
        if str(account.id) != record.account_id:
            raise BadIdentityFile(
                f"{self.identity_path} is damaged: its seed does not give its account ID"
            )
        return account

    def _read_identity_record(self) -> _Record:
        path = self.identity_path
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise NoIdentity(f"no identity in {self.path}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BadIdentityFile(f"{path} is not a regular file")
            check_private(path, st)
            if st.st_size > MAX_IDENTITY_BYTES:
                raise BadIdentityFile(f"{path} is too large to be an identity file")
            raw = f.read(MAX_IDENTITY_BYTES + 1)
        if len(raw) > MAX_IDENTITY_BYTES:
            raise BadIdentityFile(f"{path} is too large to be an identity file")
        return _parse_identity(path, raw)


def check_private(path: Path, st: os.stat_result) -> None:
    """Raise :class:`InsecureFile` unless the file ``st`` describes is ours and private:
    owned by this user and not readable or writable by group or others."""
    if not _POSIX:
        return  # Windows: modes do not express this; the profile directory's ACL does.
    if st.st_uid != os.geteuid():
        raise InsecureFile(f"{path} belongs to another user (uid {st.st_uid}); refusing to use it")
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise InsecureFile(
            f"{path} has mode {mode:04o}, so others may read its secrets; "
            f"refusing to use it (fix with: chmod 600 {path})"
        )


# --- sealing the seed ----------------------------------------------------------------------


def _passphrase_bytes(passphrase: str) -> bytes:
    if not isinstance(passphrase, str):
        raise BadPassphrase("a passphrase is text")
    if len(passphrase) > MAX_PASSPHRASE_CHARS:
        raise BadPassphrase(f"the passphrase is longer than {MAX_PASSPHRASE_CHARS} characters")
    if not passphrase:
        raise BadPassphrase("the passphrase is empty")
    # NFKC: the same passphrase typed on another keyboard or OS gives the same bytes.
    try:
        return unicodedata.normalize("NFKC", passphrase).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes from the environment
        raise BadPassphrase("the passphrase is not valid UTF-8 text") from None


def _ad(account_id: str) -> bytes:
    # Binds the sealed seed to this format and this account ID.
    return f"{IDENTITY_FORMAT}/{IDENTITY_VERSION}/seed\x00{account_id}".encode()


def derive_key(passphrase: str, salt: bytes, limits: KdfLimits) -> bytes:
    """The 32-byte key of ``passphrase`` (NFKC, UTF-8) by argon2id13 at ``limits``: what
    seals the seed, and the home's other secrets. :class:`BadPassphrase`,
    :class:`HomeError` (not enough memory)."""
    return _derive_key(passphrase, salt, limits)


def _derive_key(passphrase: str, salt: bytes, limits: KdfLimits) -> bytes:
    import nacl.exceptions
    import nacl.pwhash.argon2id as argon2id  # loaded only when a passphrase is used

    secret = _passphrase_bytes(passphrase)
    try:
        return argon2id.kdf(
            crypto.KEY_BYTES, secret, salt, opslimit=limits.opslimit, memlimit=limits.memlimit
        )
    except (nacl.exceptions.RuntimeError, MemoryError):
        raise HomeError(
            f"could not derive the key: argon2id needs {limits.memlimit >> 20} MiB of memory"
        ) from None


def _seal(account: Account, passphrase: str, limits: KdfLimits) -> dict[str, Any]:
    salt = secrets.token_bytes(SALT_BYTES)
    nonce = secrets.token_bytes(crypto.XNONCE_BYTES)
    key = _derive_key(passphrase, salt, limits)
    ciphertext = crypto.aead_seal(key, nonce, account.seed, _ad(str(account.id)))
    return {
        "kdf": KDF_NAME,
        "opslimit": limits.opslimit,
        "memlimit": limits.memlimit,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
    }


def _unseal(sealed: _Sealed, account_id: str, passphrase: str) -> bytes:
    key = _derive_key(passphrase, sealed.salt, sealed.limits)
    try:
        return crypto.aead_open(key, sealed.nonce, sealed.ciphertext, _ad(account_id))
    except IntegrityError:
        raise WrongPassphrase("wrong passphrase (or a damaged identity file)") from None


# --- parsing -------------------------------------------------------------------------------


def _parse_identity(path: Path, raw: bytes) -> _Record:
    """Check the record's shape (any version from 1 to :data:`IDENTITY_VERSION`)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadIdentityFile(f"{path} is damaged: not JSON") from None
    if not isinstance(record, dict) or record.get("format") != IDENTITY_FORMAT:
        raise BadIdentityFile(f"{path} is not a veil identity file")
    version = record.get("version")
    if type(version) is not int:
        raise BadIdentityFile(f"{path} is damaged: no format version")
    if version > IDENTITY_VERSION:
        raise BadIdentityFile(
            f"{path} has format version {version}, newer than this veil understands "
            f"({IDENTITY_VERSION}); upgrade veil"
        )
    if version < 1:
        raise BadIdentityFile(f"{path} has an unknown format version {version}")
    account_id = record.get("account_id")
    if not isinstance(account_id, str):
        raise BadIdentityFile(f"{path} is damaged: no account ID")
    has_seed, has_protection = "seed" in record, "protection" in record
    if version >= 2 and has_protection:
        if has_seed:
            raise BadIdentityFile(f"{path} is damaged: both a clear and a sealed seed")
        return _Record(account_id, None, _parse_protection(path, record["protection"]))
    seed = _hex_field(path, record.get("seed"), SEED_BYTES, "the seed")
    return _Record(account_id, seed, None)


def _parse_protection(path: Path, p: object) -> _Sealed:
    if not isinstance(p, dict):
        raise BadIdentityFile(f"{path} is damaged: bad protection record")
    if p.get("kdf") != KDF_NAME:
        raise BadIdentityFile(
            f"{path} seals its seed with an unknown KDF {p.get('kdf')!r}; upgrade veil"
        )
    ops, mem = p.get("opslimit"), p.get("memlimit")
    if type(ops) is not int or type(mem) is not int:
        raise BadIdentityFile(f"{path} is damaged: bad KDF limits")
    try:
        limits = KdfLimits(ops, mem)
    except ValueError as e:
        raise BadIdentityFile(f"{path} is damaged or hostile: {e}") from None
    return _Sealed(
        limits=limits,
        salt=_hex_field(path, p.get("salt"), SALT_BYTES, "the salt"),
        nonce=_hex_field(path, p.get("nonce"), crypto.XNONCE_BYTES, "the nonce"),
        ciphertext=_hex_field(
            path, p.get("ciphertext"), SEED_BYTES + crypto.AEAD_TAG_BYTES, "the sealed seed"
        ),
    )


def _hex_field(path: Path, value: object, size: int, what: str) -> bytes:
    problem = f"{path} is damaged: {what} is not {2 * size} hex digits"
    if not isinstance(value, str) or len(value) != 2 * size:
        raise BadIdentityFile(problem)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadIdentityFile(problem) from None
