"""The client's files on disk: atomic, durable writes, and reading the network file.

Design note
-----------
A file the client writes (an identity, a devnet's ``network.json`` or node config) is
either the old one or the new one whole, after a crash at any instant:
:func:`write_atomically` writes a temporary file next to the target, created with its
final mode (never wider, even for an instant: a seed is in it), fsyncs it, then gives
it the target's name, by a rename over the target (``overwrite=True``) or by a hard
link that fails if the target exists (``overwrite=False``: two racing ``veil id new``
cannot both win), and fsyncs the directory so that the new name survives a crash too.

:func:`read_network_file` is the one reader of the network file
(:class:`~veil.onion.directory.NetworkFile`) that the library and the ``veil`` command
share, so that every command reports a missing or bad file the same way.

No trio, no httpx: the CLI and the devnet manager import this module too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from veil.onion.directory import NetworkFile
from veil.onion.errors import NetworkFileError

__all__ = ["MAX_NETWORK_FILE_BYTES", "fsync_dir", "read_network_file", "write_atomically"]

_POSIX = os.name == "posix"

#: A network file is a few hundred bytes per authority; more than this is not one.
MAX_NETWORK_FILE_BYTES = 64 * 1024


def write_atomically(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, overwrite: bool = True
) -> None:
    """Put ``data`` at ``path`` with exactly ``mode``, all or nothing, durably.

    With ``overwrite=False``, raises :class:`FileExistsError` (and leaves ``path``
    alone) if ``path`` exists. On any error the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        try:
            if _POSIX:
                os.fchmod(fd, mode)  # exactly this mode, whatever the umask did
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
    fsync_dir(path.parent)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if ``path`` does not exist, atomically."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists") from None
    except OSError:
        # A file system without hard links: fall back to check-then-rename, which is
        # only racy against another veil writing the same file at the same instant.
        if path.exists():
            raise FileExistsError(f"{path} already exists") from None
        os.replace(tmp, path)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories can't open)."""
    if not _POSIX:
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_network_file(path: str | os.PathLike[str]) -> NetworkFile:
    """Parse the network file at ``path``; :class:`NetworkFileError` (one line, naming
    the file) if it is missing, unreadable or invalid."""
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:
            data = f.read(MAX_NETWORK_FILE_BYTES + 1)
    except FileNotFoundError:
        raise NetworkFileError(
            f"network file {p} does not exist (`veil devnet up` writes DIR/network.json)"
        ) from None
    except OSError as exc:
        raise NetworkFileError(f"cannot read network file {p}: {exc.strerror}") from None
    try:
        return NetworkFile.from_json(data)
    except NetworkFileError as exc:
        raise NetworkFileError(f"{p}: {exc}") from None
