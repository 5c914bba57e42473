"""The client's errors: one tree, rooted in :class:`veil.onion.errors.VeilError`.

:class:`ClientError` is the root of what the client library and the ``veil`` command
raise on purpose about themselves. Two kinds below it:

* local ones, which carry no wire status: the home directory and its files
  (:class:`HomeError`), the state file (:class:`StateError`), a devnet
  (:class:`DevnetError`), the command line (:class:`CliError`); and the library used
  wrongly (:class:`InvalidArgument`, :class:`NoConsensus`, :class:`TransportClosed`;
  a TTL out of limits is the protocol's :class:`~veil.onion.errors.InvalidTtl`), which
  also subclass the built-in error they replace (``ValueError``, ``RuntimeError``), as
  pynacl's errors do;
* failures to reach the network (:class:`PeerRefused`, :class:`OnionRequestFailed`,
  :class:`AuthorityUnreachable`), which are also
  :class:`~veil.onion.errors.NetworkError`: they keep the wire status of the failure
  they stand for, so a caller can tell ``rate_limited`` from ``unavailable``.

A destination's verdict on a request (``unauthorized``, ``not_found``, ...) comes out as
the protocol's own typed error (:func:`veil.onion.errors.error_for_status`).
"""

from __future__ import annotations

from collections.abc import Sequence

from veil.onion.errors import STATUS_CODES, InvalidValue, NetworkError, VeilError, WireError

__all__ = [
    "AuthorityUnreachable",
    "BadIdentityFile",
    "BadPassphrase",
    "BadSessionFile",
    "CliError",
    "ClientError",
    "DelegationError",
    "DevnetError",
    "DevnetRunning",
    "DevnetStartError",
    "HomeError",
    "IdentityExists",
    "InsecureFile",
    "InvalidArgument",
    "NoConsensus",
    "NoDevnet",
    "NoIdentity",
    "NotAuthorized",
    "NotRevocable",
    "OnionRequestFailed",
    "PassphraseRequired",
    "PeerRefused",
    "SeedRequired",
    "SessionExpired",
    "StateError",
    "TransportClosed",
    "UnknownDelegation",
    "UsageError",
    "WrongPassphrase",
]


class ClientError(VeilError):
    """Base of the client's own errors."""


# --- the library used wrongly: a bad argument, a call out of order ----------------------


class InvalidArgument(ClientError, InvalidValue):
    """An argument the library cannot take (a policy's negative timeout, a node ID of
    the wrong size, ...): refused before anything is done. An
    :class:`~veil.onion.errors.InvalidValue`, so also a :class:`ValueError`, as pynacl's
    errors are: code written against the built-in still catches it."""


class NoConsensus(ClientError, RuntimeError):
    """Paths were asked for before a consensus was installed, or the consensus lists no
    nodes to build them from. Also a :class:`RuntimeError`, what it was before."""


class TransportClosed(ClientError, RuntimeError):
    """The HTTP transport was used after it was closed, or run twice at once. Also a
    :class:`RuntimeError`, what it was before."""


# --- local: the home directory, the state file, a devnet ------------------------------


class HomeError(ClientError):
    """A problem with the client's home directory or a file in it (local state)."""


class NoIdentity(HomeError):
    """The home holds no identity yet."""


class IdentityExists(HomeError):
    """Refused to replace an identity that is already stored."""


class InsecureFile(HomeError):
    """A secret file that others can read, or that belongs to someone else."""


class BadIdentityFile(HomeError):
    """An identity file that is damaged, of an unknown version, or not one at all."""


class PassphraseRequired(HomeError):
    """The seed is sealed under a passphrase and none was given."""


class WrongPassphrase(HomeError):
    """The passphrase does not open the sealed seed (or the sealed record is damaged)."""


class BadPassphrase(HomeError):
    """A passphrase that cannot be used: empty, too long, or not text."""


class StateError(HomeError):
    """The state file cannot be used: not a database, damaged, from a newer veil, or
    locked by another process for longer than the busy timeout."""


class DevnetError(ClientError):
    """A devnet that cannot be started, found or stopped; the message says why."""


class DevnetRunning(DevnetError):
    """A devnet already runs in that directory (or another manager is starting one)."""


class NoDevnet(DevnetError):
    """No devnet runs in that directory."""


class DevnetStartError(DevnetError):
    """A process of the devnet died or did not get ready; the message names it and holds
    the tail of its log (several lines: print it whole)."""


class BadSessionFile(HomeError):
    """The persisted sessions file (``sessions.json``) is damaged, of an unknown
    version, or not one at all."""


# --- delegated session keys ----------------------------------------------------------


class DelegationError(ClientError):
    """Base of the client's refusals about delegated session keys (all local: no request
    left)."""


class NotAuthorized(DelegationError):
    """The delegated session does not grant what was asked: refused by the client before
    any request leaves. ``action`` names the missing action (``retrieve``, ``store``,
    ``post``, ``delete``, ``expire``, ...), ``namespace`` where it was needed (None: every
    namespace, as for ``delete_all``)."""

    def __init__(self, message: str, *, action: str, namespace: int | None = None) -> None:
        super().__init__(message)
        self.action = action
        self.namespace = namespace


class SessionExpired(NotAuthorized):
    """The delegated session has expired (by the network's clock): nothing it signs would
    be accepted, so nothing is sent. ``action`` is the action that was asked for."""


class SeedRequired(DelegationError):
    """The operation needs the account's own key, which a delegated session never holds:
    sealing a message (the envelope is signed by the account), opening one (sealed to
    the account's X25519 key), issuing a first-link capability."""


class UnknownDelegation(DelegationError, InvalidValue):
    """A DID or link hash that names no delegation this home issued (or a malformed
    one)."""


class NotRevocable(DelegationError):
    """Nothing left to revoke: every link the target names is revoked or expired."""


# --- reaching the network ------------------------------------------------------------

#: A refusal's explanation is a short text/plain line; more is cut.
MAX_ERROR_TEXT = 512

# HTTP codes a node answers to a refused packet, as wire statuses.
_CODE_STATUS = {code: status for status, code in STATUS_CODES.items()}


class PeerRefused(ClientError, NetworkError):
    """The peer answered with an HTTP status other than 200.

    ``code`` is the HTTP status, ``status`` the wire status it stands for (400 a packet
    the guard could not process, 429 rate limited, 503 unavailable, ...), ``text`` the
    peer's explanation (cut to 512 characters).
    """

    def __init__(self, code: int, text: str) -> None:
        text = " ".join(text.split())[:MAX_ERROR_TEXT]
        message = f"HTTP {code}: {text}" if text else f"HTTP {code}"
        super().__init__(message, status=_CODE_STATUS.get(code, "bad_gateway"))
        self.code = code
        self.text = text


class OnionRequestFailed(ClientError, NetworkError):
    """Every try of an onion request failed; ``errors`` holds each try's failure."""

    def __init__(self, message: str, errors: Sequence[BaseException]) -> None:
        last = errors[-1] if errors else None
        super().__init__(message, status=last.status if isinstance(last, WireError) else None)
        self.errors = list(errors)


class AuthorityUnreachable(ClientError, NetworkError):
    """No directory authority gave a consensus: unreachable, or none has one yet."""

    status = "unavailable"


# --- the command line ----------------------------------------------------------------


class CliError(ClientError):
    """A user error of the ``veil`` command: printed as one line on stderr, exit 1."""

    exit_code: int = 1  # veil.client.cli.framework.EXIT_ERROR (not imported: it imports us)


class UsageError(CliError):
    """The command line is wrong in a way argparse could not check: exit 2."""

    exit_code = 2  # EXIT_USAGE
