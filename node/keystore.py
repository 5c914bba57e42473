"""The node's data directory: its keys, its lock, and the files it shares with tools.

Design note
-----------
Layout of ``--data-dir DIR`` (the directory is mode 0700; created so, tightened if not)::

    DIR/node_keys.json   identity seed and onion secret (mode 0600, never logged)
    DIR/lock             flock()ed while a node runs: two nodes never share a directory
    DIR/node.json        address, node ID, onion key, pid of the running node (0644)
    DIR/store.sqlite     the message store (node/store/), with its -wal and -shm

Keys are created on the first start from the OS CSPRNG and loaded on later starts. Every
write is atomic (a temporary file in the same directory, fsync, rename, fsync of the
directory), so a crash leaves the old file or the new one, never half of one. As Tor
does with its DataDirectory, the node refuses a key file that others may read (fix the
mode or delete the file) rather than using a key that may have leaked.

The lock is an advisory ``flock`` that the kernel drops when the process dies, so after
a ``kill -9`` the next start takes it without any stale-lock cleanup.

Everything here is blocking file I/O, done once at start-up (before the server runs).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from veil.onion.crypto import Rng, system_rng
from veil.onion.keys import NodeKeys

from .errors import KeystoreError

__all__ = [
    "KEYS_FILE",
    "LOCK_FILE",
    "NODE_INFO_FILE",
    "STORE_FILE",
    "load_or_create_keys",
    "lock_data_dir",
    "prepare_data_dir",
    "write_file_atomic",
]

KEYS_FILE = "node_keys.json"
LOCK_FILE = "lock"
NODE_INFO_FILE = "node.json"
STORE_FILE = "store.sqlite"

_KEYS_VERSION = 1
_MAX_KEYS_FILE = 4096


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (mode 0700) or tighten an existing one to 0700.

    Raises :class:`KeystoreError` if it cannot be created or is not a directory.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise KeystoreError(f"data dir {data_dir} exists and is not a directory")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = data_dir.stat()
        if st.st_mode & 0o077:
            os.chmod(data_dir, 0o700)
    except OSError as exc:
        raise KeystoreError(f"cannot use data dir {data_dir}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def lock_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock; :class:`KeystoreError` if another node holds it."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise KeystoreError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KeystoreError(f"another veil-node is running on {data_dir}") from None
        yield
    finally:
        os.close(fd)  # closing drops the lock


def write_file_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically and durably, the new file having ``mode``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed or widened O_CREAT's mode
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_keys(
    data_dir: Path, *, rng: Rng = system_rng, name: str = KEYS_FILE
) -> tuple[NodeKeys, bool]:
    """The node's keys from ``data_dir``, created there first if there are none.

    Returns ``(keys, created)``. Raises :class:`KeystoreError` for a key file that is
    readable by others, too large, or not a key file of this version. ``name`` is the
    key file's name (a directory authority keeps its key in ``authority_keys.json``).
    """
    path = data_dir / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        keys = NodeKeys.generate(rng)
        doc = {
            "version": _KEYS_VERSION,
            "identity_seed": keys.identity_seed.hex(),
            "onion_secret": keys.onion_secret.hex(),
        }
        try:
            write_file_atomic(path, json.dumps(doc).encode() + b"\n", 0o600)
        except OSError as exc:
            raise KeystoreError(f"cannot write {path}: {exc.strerror or exc}") from None
        return keys, True
    except OSError as exc:
        raise KeystoreError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeystoreError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeystoreError(
                f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o});"
                " the keys may have leaked: chmod 600 it if they have not, or delete it"
                " to make new ones"
            )
        raw = os.read(fd, _MAX_KEYS_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_KEYS_FILE:
        raise KeystoreError(f"{path} is too large to be a key file")
    return _parse_keys(path, raw), False


def _parse_keys(path: Path, raw: bytes) -> NodeKeys:
    try:
        doc: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise KeystoreError(f"{path} is not a veil node key file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("version") != _KEYS_VERSION:
        raise KeystoreError(f"{path} is not a version {_KEYS_VERSION} veil node key file")
    if set(doc) != {"version", "identity_seed", "onion_secret"}:
        raise KeystoreError(f"{path} has unexpected fields")
    secrets: list[bytes] = []
    for name in ("identity_seed", "onion_secret"):
        value = doc[name]
        try:
            secret = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            secret = b""
        if len(secret) != 32:
            raise KeystoreError(f"{path}: {name} is not 32 bytes of hex")
        secrets.append(secret)
    return NodeKeys(secrets[0], secrets[1])
