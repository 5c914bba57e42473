"""A delegated session: a session key and the capability chain that authorizes it.

Design note
-----------
The client's face of :mod:`veil.onion.capability`, after Ceramic's DIDSession::

    session = authorize(account, ["self:0:retrieve,delete"], expires_in=3600)
    text = session.serialize()                  # give this string to the worker
    worker = DelegatedSession.from_string(text) # the worker: no seed, only this
    worker.is_authorized("self:0:retrieve")     # True ('self' is the session's account)
    child = worker.delegate(["self:0:retrieve"], expires_in=600)   # needs 'delegate'

:func:`authorize` is the account's act: it draws a fresh Ed25519 session key (the OS
CSPRNG), and signs the first link of a chain for it (sans-IO, no network: a
capability is checked by the nodes when it is used, not registered when it is issued).
:meth:`DelegatedSession.delegate` is the holder's: it extends the chain by one link to
a new key, for a part of what the session holds with ``delegate`` and no later expiry;
anything wider is refused before it is signed, with the error a node would answer
(:class:`~veil.onion.errors.ResourcesWidened`, :class:`~veil.onion.errors.ExpiryExtended`).

Resources are :class:`~veil.onion.capability.Resource` objects or the command line's
``OWNER:NAMESPACES:ACTIONS`` text (``self:0:retrieve,delete``, ``05ab...:-1:post``,
``self:*:retrieve``), where ``self`` is the issuing account (for a session: the account
it acts for).

Time. ``is_expired`` and ``expires_in_secs`` read this machine's clock, as DIDSession's
do; a :class:`~veil.client.veil_client.VeilClient` checks a session against the
network's clock before every request (:class:`~veil.client.errors.SessionExpired`). A
node accepts a link until its expiry plus the usual clock skew (a minute).

The serialized string (:func:`veil.onion.capability.encode_session`) holds the session's
secret key: whoever has it acts within the chain's resources until it expires or is
revoked. Keep it as a secret (``veil id delegate -o FILE`` writes it with mode 0600). A
string that was altered is refused by :meth:`DelegatedSession.from_string` with
:class:`~veil.onion.errors.InvalidSession`, naming what is wrong.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from veil.client.errors import InvalidArgument, NotAuthorized, SessionExpired
from veil.onion.capability import (
    DEFAULT_LIFETIME_MS,
    MAX_LIFETIME_MS,
    Chain,
    Owner,
    Resource,
    SessionKey,
    decode_session,
    delegate,
    encode_session,
    format_resource,
    grants,
    missing_actions,
    parse_resources,
    redelegate,
    required,
)
from veil.onion.capability.links import Signer
from veil.onion.keys import AccountId
from veil.onion.wallclock import wall_clock_ms

if TYPE_CHECKING:
    from veil.onion.capability import DelegatedSigner

__all__ = [
    "DEFAULT_EXPIRES_IN_S",
    "DelegatedSession",
    "ResourceLike",
    "authorize",
    "expires_in_ms",
    "normalize_resources",
]

#: A session's lifetime when none is named: 7 days, as DIDSession's.
DEFAULT_EXPIRES_IN_S = DEFAULT_LIFETIME_MS // 1000

#: What the API takes as a resource: a Resource, or ``OWNER:NAMESPACES:ACTIONS`` text.
ResourceLike: TypeAlias = Resource | str


def expires_in_ms(expires_in: float | datetime.timedelta) -> int:
    """A lifetime (seconds, or a timedelta) as ms; :class:`InvalidArgument` unless it is
    positive and at most 30 days (the longest a capability may live)."""
    if isinstance(expires_in, datetime.timedelta):
        seconds = expires_in.total_seconds()
    elif isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        raise InvalidArgument(f"expires_in is seconds or a timedelta, not {expires_in!r}")
    else:
        seconds = float(expires_in)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgument(f"expires_in must be a positive duration, not {expires_in!r}")
    ms = math.ceil(seconds * 1000)
    if ms > MAX_LIFETIME_MS:
        raise InvalidArgument(
            f"a delegated session lives at most {MAX_LIFETIME_MS // 86_400_000} days"
        )
    return ms


def normalize_resources(
    resources: ResourceLike | Iterable[ResourceLike], *, self_owner: Owner
) -> tuple[Resource, ...]:
    """Resources from objects and ``OWNER:NAMESPACES:ACTIONS`` texts, ``self`` being
    ``self_owner``. :class:`~veil.onion.errors.InvalidResource` names what is wrong."""
    items: Iterable[ResourceLike] = (
        [resources] if isinstance(resources, Resource | str) else resources
    )
    out: list[Resource] = []
    for item in items:
        if isinstance(item, Resource):
            out.append(item)
        elif isinstance(item, str):
            out.extend(parse_resources(item, self_owner=self_owner))
        else:
            raise InvalidArgument(
                f"a resource is a Resource or OWNER:NAMESPACES:ACTIONS text, not {item!r}"
            )
    if not out:
        raise InvalidArgument("name at least one resource")
    return tuple(out)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class DelegatedSession:
    """A session key and its verified chain: acts for :attr:`account` on
    :attr:`resources` until :attr:`expires_ms`. Build one with :func:`authorize`,
    :meth:`delegate` or :meth:`from_string`; the key is never printed."""

    key: SessionKey
    chain: Chain

    # --- what it is --------------------------------------------------------------------

    @property
    def did(self) -> str:
        """The session key as a ``did:key`` (``did:key:z6Mk...``)."""
        return self.key.did

    @property
    def account(self) -> AccountId:
        """The account the session acts for (the chain's owner)."""
        owner = self.chain.owner
        if not isinstance(owner, AccountId):  # a group's chain: encryption sessions
            raise InvalidArgument("this session acts for a group, not an account")
        return owner

    @property
    def owner(self) -> Owner:
        return self.chain.owner

    @property
    def resources(self) -> tuple[Resource, ...]:
        """What the session may do: its last link's resources."""
        return self.chain.resources

    @property
    def authorizations(self) -> tuple[str, ...]:
        """Its resources as ``OWNER:NAMESPACES:ACTIONS`` texts (DIDSession's
        ``authorizations``), the owner written out."""
        return tuple(format_resource(r) for r in self.chain.resources)

    @property
    def statement(self) -> str | None:
        """The statement of the session's own link, if its issuer wrote one."""
        return self.chain.links[-1].statement

    @property
    def expires_ms(self) -> int:
        """When the chain stops working (ms since the epoch): its earliest expiry."""
        return self.chain.expires_ms

    @property
    def link_hash(self) -> str:
        """The hash (hex) of the session's own link: what revokes it."""
        return self.chain.links[-1].digest.hex()

    @property
    def depth(self) -> int:
        """Links in its chain: 1 for a session the account authorized."""
        return len(self.chain.links)

    # --- time ----------------------------------------------------------------------------

    def expires_in_ms_at(self, now_ms: int) -> int:
        return max(0, self.expires_ms - now_ms)

    @property
    def is_expired(self) -> bool:
        """True once this machine's clock has passed the expiry."""
        return wall_clock_ms() >= self.expires_ms

    @property
    def expires_in_secs(self) -> int:
        """Whole seconds left before the expiry by this machine's clock (0 once expired)."""
        return self.expires_in_ms_at(wall_clock_ms()) // 1000

    # --- what it may do --------------------------------------------------------------------

    def missing(self, resource: ResourceLike | Iterable[ResourceLike]) -> frozenset[str]:
        """The actions of ``resource`` (or resources) the session does not grant (empty:
        it grants them all). Time and revocation are not considered."""
        wanted = normalize_resources(resource, self_owner=self.chain.owner)
        missing: set[str] = set()
        for each in wanted:
            missing |= missing_actions(self.chain.resources, each)
        return frozenset(missing)

    def is_authorized(self, resource: ResourceLike | Iterable[ResourceLike]) -> bool:
        """Whether the session grants every action of ``resource`` over its whole range
        (and has not expired by this machine's clock)."""
        return not self.is_expired and not self.missing(resource)

    def allows(self, method: str, namespace: int | None) -> str | None:
        """The action a storage request of ``method`` in ``namespace`` needs, if the
        session lacks it; None if it grants it (time aside)."""
        action, first, last = required(method, namespace)
        if grants(self.chain.resources, self.chain.owner, action, first, last):
            return None
        return action

    def require(self, method: str, namespace: int | None, *, now_ms: int) -> None:
        """Refuse, before anything is sent, a storage request the session cannot make:
        :class:`~veil.client.errors.SessionExpired` once ``now_ms`` (the network's time)
        has reached the expiry, :class:`~veil.client.errors.NotAuthorized` naming the
        missing action otherwise."""
        action, _, _ = required(method, namespace)
        if now_ms >= self.expires_ms:
            raise SessionExpired(
                f"the delegated session {self.did} expired at {self.expires_ms} "
                f"(now {now_ms}): {method} not sent",
                action=action,
                namespace=namespace,
            )
        missing = self.allows(method, namespace)
        if missing is not None:
            where = "every namespace" if namespace is None else f"namespace {namespace}"
            raise NotAuthorized(
                f"the delegated session does not grant {missing} in {where} of "
                f"{self.chain.owner} (needed by {method}); it grants "
                f"{', '.join(self.authorizations)}",
                action=missing,
                namespace=namespace,
            )

    @property
    def signer(self) -> DelegatedSigner:
        """What the storage RPC's builders sign requests with (the onion's
        :class:`~veil.onion.capability.DelegatedSigner`)."""
        from veil.onion.capability import DelegatedSigner

        return DelegatedSigner(self.key, self.chain)

    # --- the string ----------------------------------------------------------------------

    def serialize(self) -> str:
        """One string, the session key and its chain (``veil-session-v1:...``): a secret."""
        return encode_session(self.key, self.chain)

    @classmethod
    def from_string(cls, text: str) -> DelegatedSession:
        """The session of a :meth:`serialize` string, checked (structure, every
        signature, the key is the chain's audience); an expired one still loads.
        :class:`~veil.onion.errors.InvalidSession` for one that was altered."""
        key, chain = decode_session(text.strip() if isinstance(text, str) else text)
        return cls(key, chain)

    # --- re-delegating ----------------------------------------------------------------

    def delegate(
        self,
        resources: ResourceLike | Iterable[ResourceLike],
        expires_in: float | datetime.timedelta | None = None,
        *,
        statement: str | None = None,
        now_ms: int | None = None,
    ) -> DelegatedSession:
        """A new session for a fresh key, holding a part of this one: ``resources`` must
        be held here with ``delegate``, and it expires no later than this one (default:
        when this one does, capped at 7 days from now). Refused before signing:
        :class:`~veil.onion.errors.ResourcesWidened`,
        :class:`~veil.onion.errors.ExpiryExtended`."""
        now = wall_clock_ms() if now_ms is None else now_ms
        wanted = normalize_resources(resources, self_owner=self.chain.owner)
        expires_ms = None if expires_in is None else now + expires_in_ms(expires_in)
        child = SessionKey.generate()
        chain = redelegate(
            self.chain,
            self.key,
            child.ed25519_public,
            wanted,
            now_ms=now,
            expires_ms=expires_ms,
            statement=statement,
        )
        return DelegatedSession(child, chain)

    def __repr__(self) -> str:
        return (
            f"DelegatedSession({self.did}, for {self.chain.owner}, "
            f"{', '.join(self.authorizations)}, expires_ms={self.expires_ms})"
        )


def authorize(
    account: Signer,
    resources: ResourceLike | Iterable[ResourceLike],
    expires_in: float | datetime.timedelta = DEFAULT_EXPIRES_IN_S,
    *,
    statement: str | None = None,
    now_ms: int | None = None,
) -> DelegatedSession:
    """A new session for a fresh key, authorized by ``account`` (an
    :class:`~veil.onion.keys.Account`, which must own every resource) on ``resources``
    for ``expires_in`` seconds (default 7 days, at most 30). No network: see the module
    note. :class:`~veil.onion.errors.InvalidResource` for a resource it cannot grant."""
    from veil.onion.keys import Account

    if not isinstance(account, Account):
        raise InvalidArgument("authorize() takes the account (with its seed)")
    now = wall_clock_ms() if now_ms is None else now_ms
    wanted = normalize_resources(resources, self_owner=account.id)
    key = SessionKey.generate()
    chain = delegate(
        account,
        key.ed25519_public,
        wanted,
        now_ms=now,
        lifetime_ms=expires_in_ms(expires_in),
        statement=statement,
    )
    return DelegatedSession(key, chain)
