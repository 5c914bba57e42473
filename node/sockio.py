"""Reads and writes on a connected trio socket, without trio's stream layers.

Design note
===========

A relay at rest does two reads and two writes per packet (the packet in, on to the
next hop, the reply back, and back to the previous hop), and the path's round trip is
the sum of those hops. trio's :class:`trio.SocketStream` is correct and general, and on
each call it pays for that generality: a conflict detector, an error-translating
context manager, a cancellation check, and, after a read or write that completed at
once, a yield to the scheduler (a full pass of the run loop, with an ``epoll_wait``).
A read at rest is a failed ``recv`` (nothing there yet), a wait, the ``recv``, then that
yield: two passes of the run loop and three system calls for one read.

:class:`SocketIO` goes to the socket's file descriptor instead:

* :meth:`SocketIO.receive_some` waits first when the previous read emptied the
  socket (the usual case at rest, so no ``recv`` fails), otherwise yields once before
  reading (so that a peer that keeps the socket full cannot starve the other tasks).
  Either way the call is exactly one checkpoint.
* :meth:`SocketIO.try_send` writes what the kernel takes at once, without yielding, and
  says how much that was; :meth:`SocketIO.send_all` waits for the socket to be writable
  for the rest. A complete write is *not* a checkpoint: a caller that loops on writes
  alone must yield elsewhere (the link's and the server's writes each follow a read or a
  wait).

Errors are those of trio's streams: :class:`trio.BrokenResourceError` for a reset or a
broken pipe, :class:`trio.ClosedResourceError` once the socket was closed (the file
descriptor is looked up on each call, so a closed socket's number, which the kernel
may give to a new file, is never read or written). Cancellation: only the waits are
cancellable; a cancelled :meth:`~SocketIO.receive_some` read nothing, and a cancelled
:meth:`~SocketIO.send_all` may have written part of its data (as trio's own).

This needs POSIX, where a socket is a file descriptor that ``os.read`` and ``os.write``
take. Elsewhere :class:`SocketIO` is :class:`StreamIO`, the same three methods over
trio's stream (slower at rest, the same behaviour otherwise).

Several tasks must not read (or write) at once: the callers serialise their writes
(node/link/'s frame writer, one response at a time in node/server/) and each
socket has one reader. A second waiter raises :class:`trio.BusyResourceError`.
"""

from __future__ import annotations

import errno
import os

import trio

__all__ = ["AnySocketIO", "FdIO", "SocketIO", "StreamIO"]

#: errno values that mean "this socket was closed here", as trio's streams treat them.
_CLOSED = frozenset({errno.EBADF, errno.ENOTSOCK})


def _translate(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    if exc.errno in _CLOSED:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class FdIO:
    """Direct reads and writes on ``stream``'s socket; see the module docstring.

    The stream stays the owner of the socket (closing it, ``send_eof``, its address):
    this object only moves bytes.
    """

    __slots__ = ("_drained", "_sock")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._sock = stream.socket
        #: True when the last read took everything the socket held (wait before the
        #: next read instead of trying it).
        self._drained = False

    def _fd(self) -> int:
        fd = self._sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        return fd

    async def receive_some(self, max_bytes: int) -> bytes:
        """At most ``max_bytes`` (at least 1) bytes; ``b""`` at end of stream.

        One checkpoint per call. Raises ClosedResourceError, BrokenResourceError.
        """
        sock = self._sock
        if self._drained:
            self._fd()
            await trio.lowlevel.wait_readable(sock)
        else:
            await trio.lowlevel.checkpoint()
        while True:
            fd = self._fd()
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                raise _translate(exc) from None
            self._drained = len(data) < max_bytes
            return data

    def try_send(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes of ``data`` now; how many bytes that was (0: none).

        Never blocks, never yields. Raises ClosedResourceError, BrokenResourceError.
        """
        try:
            return os.write(self._fd(), data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise _translate(exc) from None

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of ``data``; waits only while the kernel's buffer is full.

        Not a checkpoint when the kernel takes everything at once (see the module
        docstring). If cancelled while waiting, part of ``data`` may have been written.
        """
        sent = self.try_send(data)
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(view):
            await trio.lowlevel.wait_writable(self._sock)
            sent += self.try_send(view[sent:])


class StreamIO:
    """:class:`FdIO`'s methods over trio's own stream: for systems where a socket is
    not a file descriptor. Every read and write is a checkpoint here."""

    __slots__ = ("_stream",)

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self._stream.receive_some(max_bytes)

    def try_send(self, data: bytes | memoryview) -> int:
        """Writes nothing (trio's stream has no write that cannot wait): 0."""
        if self._stream.socket.fileno() < 0:
            raise trio.ClosedResourceError("the socket was closed")
        return 0

    async def send_all(self, data: bytes | memoryview) -> None:
        await self._stream.send_all(data)


#: Either implementation (for annotations).
AnySocketIO = FdIO | StreamIO
#: The implementation for this system (see the module docstring).
SocketIO: type[FdIO] | type[StreamIO] = FdIO if os.name == "posix" else StreamIO
