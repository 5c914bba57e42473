"""The client's home directory and the identity stored in it.

A home is one directory (``veil --home DIR``, ``VEIL_HOME``, or the platform's user data
directory) that only its owner may enter: it is created with mode 0700. It holds the
account's seed, and later the client's state (issue 5 adds a SQLite file next to it).

The identity file, ``identity.json``, is small versioned JSON, mode 0600::

    {"format": "veil-identity", "version": 1,
     "account_id": "05...", "seed": "<64 hex digits>"}

* ``version`` lets the format grow without guessing: issue 5 adds an optional
  passphrase (argon2id) as version 2, where ``seed`` gives way to a sealed seed and its
  KDF parameters. A reader refuses a version it does not know instead of misreading it.
* ``account_id`` is redundant with the seed on purpose: it lets ``veil id show`` answer
  without the passphrase once the seed is sealed, and it catches a damaged seed (any 32
  bytes are a valid seed, so damage would otherwise go unnoticed and silently become
  another account).

Writes are atomic and durable: a temporary file created with mode 0600 (never wider,
even for an instant), fsync, then a rename over the target (``overwrite``) or a hard
link to it (no overwrite: the link fails if the target exists, so two racing
``veil id new`` cannot both win), then an fsync of the directory so the new name
survives a crash.

Reads refuse a seed that others could read, as ssh refuses such a private key: the
check is made on the opened file (``fstat``), so it is about the bytes actually read.
A file's size is checked before it is parsed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path

from onion.errors import VeilError
from onion.keys import Account, AccountId

IDENTITY_FILE = "identity.json"
IDENTITY_FORMAT = "veil-identity"
IDENTITY_VERSION = 1
# An identity file is about 200 bytes; anything much larger is not one, and is refused
# before it is read into memory.
MAX_IDENTITY_BYTES = 64 * 1024

_POSIX = os.name == "posix"


class HomeError(VeilError):
    """A problem with the client's home directory or a file in it (local state)."""

    status = "bad_request"


class NoIdentity(HomeError):
    """The home holds no identity yet."""


class IdentityExists(HomeError):
    """Refused to replace an identity that is already stored."""


class InsecureFile(HomeError):
    """A secret file that others can read, or that belongs to someone else."""


class BadIdentityFile(HomeError):
    """An identity file that is damaged, of an unknown version, or not one at all."""


class Home:
    """The client's home directory. Creating a ``Home`` touches nothing on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"Home({str(self.path)!r})"

    @property
    def identity_path(self) -> Path:
        return self.path / IDENTITY_FILE

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

    def save_identity(self, account: Account, *, overwrite: bool = False) -> Path:
        """Store ``account``'s seed; return the file's path.

        Raises :class:`IdentityExists` if an identity is stored and not ``overwrite``;
        in that case nothing on disk changes.
        """
        self.ensure()
        record = {
            "format": IDENTITY_FORMAT,
            "version": IDENTITY_VERSION,
            "account_id": str(account.id),
            "seed": account.seed.hex(),
        }
        data = (json.dumps(record, indent=1) + "\n").encode()
        _write_secret_atomically(self.identity_path, data, overwrite=overwrite)
        return self.identity_path

    def load_identity(self) -> Account:
        """The stored account.

        Raises :class:`NoIdentity`, :class:`InsecureFile` (readable by group or others,
        or owned by another user) or :class:`BadIdentityFile`.
        """
        seed, account_id = self._read_identity_record()
        account = Account(seed)
        if str(account.id) != account_id:
            raise BadIdentityFile(
                f"{self.identity_path} is damaged: its seed does not give its account ID"
            )
        return account

    def account_id(self) -> AccountId:
        """The stored account's ID (later readable without unsealing the seed)."""
        return self.load_identity().id

    def _read_identity_record(self) -> tuple[bytes, str]:
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
            _check_private(path, st)
            if st.st_size > MAX_IDENTITY_BYTES:
                raise BadIdentityFile(f"{path} is too large to be an identity file")
            raw = f.read(MAX_IDENTITY_BYTES + 1)
        if len(raw) > MAX_IDENTITY_BYTES:
            raise BadIdentityFile(f"{path} is too large to be an identity file")
        return _parse_identity(path, raw)


def _check_private(path: Path, st: os.stat_result) -> None:
    """Refuse a secret file that anyone but its owner, us, could read or change."""
    if not _POSIX:
        return  # Windows: modes do not express this; the profile directory's ACL does.
    if st.st_uid != os.geteuid():
        raise InsecureFile(f"{path} belongs to another user (uid {st.st_uid}); refusing to use it")
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise InsecureFile(
            f"{path} has mode {mode:04o}, so others may read the seed; "
            f"refusing to use it (fix with: chmod 600 {path})"
        )


def _parse_identity(path: Path, raw: bytes) -> tuple[bytes, str]:
    """Check the record's shape and return its ``(seed, account_id)``."""
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
    if version != IDENTITY_VERSION:
        raise BadIdentityFile(f"{path} has an unknown format version {version}")
    seed_hex, account_id = record.get("seed"), record.get("account_id")
    if not isinstance(seed_hex, str) or len(seed_hex) != 64:
        raise BadIdentityFile(f"{path} is damaged: the seed is not 64 hex digits")
    try:
        seed = bytes.fromhex(seed_hex)
    except ValueError:
        raise BadIdentityFile(f"{path} is damaged: the seed is not 64 hex digits") from None
    if not isinstance(account_id, str):
        raise BadIdentityFile(f"{path} is damaged: no account ID")
    return seed, account_id


def _write_secret_atomically(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Put ``data`` at ``path`` with mode 0600, all or nothing, durably.

    Raises :class:`IdentityExists` (and leaves ``path`` alone) if ``path`` exists and
    not ``overwrite``. On any error the temporary file is removed.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            if _POSIX:
                os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask did
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if ``path`` does not exist, atomically."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise IdentityExists(f"an identity already exists in {path}") from None
    except OSError:
        # A file system without hard links: fall back to check-then-rename, which is
        # only racy against another veil writing the same home at the same instant.
        if path.exists():
            raise IdentityExists(f"an identity already exists in {path}") from None
        os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories can't open)."""
    if not _POSIX:
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
