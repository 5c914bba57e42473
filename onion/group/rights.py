"""Session rights and the capability resources that carry them.

Design note
-----------
Membership of an encryption session is a capability chain (:mod:`veil.onion.capability`)
whose owner is the session's group ID (``03...``) and whose first link is issued by the
session's Ed25519 key: nodes check a member's storage requests with the very
:func:`~veil.onion.capability.authorize` they use for delegated keys, and revoking a
member is revoking its link (the capability revocation record; everything below it
stops working). Seald's three rights map to actions of two resources, one per
namespace of the session's swarm (:mod:`~veil.onion.group.limits`):

=========  =====================================  =====================================
right      state namespace (1): the records       messages namespace (2)
=========  =====================================  =====================================
read       ``retrieve``                           ``retrieve``, ``store``
forward    ``store``, ``delegate``                ``delegate``
revoke     ``store``, ``revoke``                  ``revoke``
=========  =====================================  =====================================

* ``read``: read the state and the messages, and post messages (a member may encrypt
  for the session, as in Seald). Every member holds it: a right set without ``read`` is
  refused (:class:`~veil.onion.errors.InvalidRights`), since a member that cannot read
  gets no key.
* ``forward``: add members (store their member records; ``delegate`` lets the holder
  issue links, and a chain's attenuation makes a member give no right it lacks: to give
  ``revoke`` the parent must hold ``revoke`` with ``delegate``).
* ``revoke``: store revocations and key epochs (rotating is a revoker's job), revoke
  links over both namespaces, end the whole session.

A link's resources must be exactly the resources of one right set
(:func:`rights_of_resources`); anything else is not a membership link
(:class:`~veil.onion.errors.MalformedRecord`), so a member's rights are read from its
last link alone, without guessing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ..capability import DELEGATE, RETRIEVE, REVOKE, STORE, Resource
from ..capability.resources import sorted_resources
from ..errors import InvalidRights, MalformedRecord
from ..keys import GroupId
from .limits import MESSAGES_NAMESPACE, STATE_NAMESPACE

__all__ = [
    "ALL_RIGHTS",
    "DEFAULT_RIGHTS",
    "FORWARD",
    "READ",
    "REVOKE_RIGHT",
    "Rights",
    "check_rights",
    "resources_of_rights",
    "rights_of_resources",
]

READ: Final = "read"
FORWARD: Final = "forward"
REVOKE_RIGHT: Final = "revoke"
#: Every right; the creator holds them all.
ALL_RIGHTS: Final = frozenset({READ, FORWARD, REVOKE_RIGHT})
#: What ``add_recipients`` gives when it is told nothing (Seald's default).
DEFAULT_RIGHTS: Final = frozenset({READ, FORWARD})

Rights = frozenset[str]

_STATE_ACTIONS: Final = {
    READ: {RETRIEVE},
    FORWARD: {STORE, DELEGATE},
    REVOKE_RIGHT: {STORE, REVOKE},
}
_MESSAGE_ACTIONS: Final = {READ: {RETRIEVE, STORE}, FORWARD: {DELEGATE}, REVOKE_RIGHT: {REVOKE}}


def check_rights(rights: Iterable[str]) -> Rights:
    """``rights`` as a frozenset, or :class:`InvalidRights` (unknown right, no ``read``)."""
    if isinstance(rights, str):
        raise InvalidRights("rights are a set of names, not one string")
    out = frozenset(rights)
    unknown = out - ALL_RIGHTS
    if unknown:
        raise InvalidRights(
            f"unknown right(s) {', '.join(sorted(map(str, unknown)))}: "
            f"one of {', '.join(sorted(ALL_RIGHTS))}"
        )
    if READ not in out:
        raise InvalidRights("every member holds read")
    return out


def resources_of_rights(session: GroupId, rights: Iterable[str]) -> tuple[Resource, ...]:
    """The two resources (state, messages) that carry ``rights``, in wire order."""
    held = check_rights(rights)
    state = frozenset().union(*(_STATE_ACTIONS[r] for r in held))
    messages = frozenset().union(*(_MESSAGE_ACTIONS[r] for r in held))
    return sorted_resources(
        [
            Resource.single(session, STATE_NAMESPACE, state),
            Resource.single(session, MESSAGES_NAMESPACE, messages),
        ]
    )


_RIGHT_SETS: Final = (
    frozenset({READ}),
    frozenset({READ, FORWARD}),
    frozenset({READ, REVOKE_RIGHT}),
    ALL_RIGHTS,
)


def rights_of_resources(session: GroupId, resources: Iterable[Resource]) -> Rights:
    """The right set whose resources are exactly ``resources``;
    :class:`MalformedRecord` if none is (not a membership link of ``session``)."""
    given = frozenset(resources)
    for rights in _RIGHT_SETS:
        if given == frozenset(resources_of_rights(session, rights)):
            return rights
    raise MalformedRecord("a membership link's resources are not those of a right set")
