"""Resources and actions: what a capability grants, and what a storage method needs.

Design note
-----------
A resource names an owner (an account, ``05...``; a group, ``03...``, is reserved for
encryption sessions), an inclusive range of namespaces and a set of actions::

    {"with": owner (33 bytes: 0x05 or 0x03, then the 32-byte key),
     "ns":   [first, last]          (-32768 <= first <= last <= 32767),
     "can":  [action, ...]}         (sorted, no repeats, at least one)

The actions are :data:`ACTIONS`; anything else is refused
(:class:`~veil.onion.errors.UnknownAction`), never ignored, so that a capability written
for a later version that grants a right this node does not know cannot be taken to grant
less (or more) than it says. There is no wildcard on the wire: ``*`` on the command line
is expanded to every action (or every namespace) when the capability is written, so a
capability never gains an action that a later version adds.

What a storage method needs (:func:`required`), and the two rules that are easy to
get wrong:

* ``store`` into a namespace >= 0 needs ``store``; into a public-read namespace (< 0)
  it needs ``post``, and ``store`` does *not* cover it. Publishing is the one write that
  everybody can read, so it is granted only by name: ``self:*:store`` never publishes,
  as a mistaken namespace number never publishes (see :mod:`veil.onion.rpc.namespaces`).
  ``post`` on namespaces >= 0 grants nothing.
* ``delete_all`` without a namespace deletes in every namespace, so it needs ``delete``
  over the whole range -32768..32767 (one resource ``*`` or several that together cover
  it); ``delete_all`` of one namespace needs ``delete`` there.

``retrieve`` needs ``retrieve``, ``delete`` ``delete``, ``expire`` ``expire``;
``delegate`` lets its holder issue a narrower capability of the resource to another
key, and ``revoke`` lets it revoke any link that grants only what it holds ``revoke``
over (see :mod:`~veil.onion.capability.revocations`). ``info`` and ``get_swarm`` are
never signed.

Coverage is by union: a request, or a resource of a child link, is covered when, for
each action, the namespaces of the granting resources that hold that action (and the
same owner) together contain its range. Two resources ``1..5`` and ``6..10`` cover
``1..10``.

The command line writes a resource as ``OWNER:NAMESPACES:ACTIONS``
(:func:`parse_resources`): ``self:0:retrieve,delete``, ``05ab...:-1:post``,
``self:*:retrieve``, ``self:1..10,-5:store,post``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final, TypeAlias

from ..errors import InvalidId, InvalidResource, MalformedCapability, UnknownAction
from ..keys import ACCOUNT_PREFIX, GROUP_PREFIX, AccountId, GroupId
from .limits import NAMESPACE_MAX, NAMESPACE_MIN

__all__ = [
    "ACTIONS",
    "ALL_NAMESPACES",
    "DELEGATE",
    "DELETE",
    "EXPIRE",
    "POST",
    "RETRIEVE",
    "REVOKE",
    "STORE",
    "Owner",
    "Resource",
    "format_resource",
    "grants",
    "missing_actions",
    "parse_resources",
    "required",
]

RETRIEVE: Final = "retrieve"
STORE: Final = "store"
DELETE: Final = "delete"
EXPIRE: Final = "expire"
POST: Final = "post"
DELEGATE: Final = "delegate"
REVOKE: Final = "revoke"
#: Every action veil knows; a capability with any other is refused.
ACTIONS: Final = frozenset({RETRIEVE, STORE, DELETE, EXPIRE, POST, DELEGATE, REVOKE})
#: The namespace range of ``*``.
ALL_NAMESPACES: Final = (NAMESPACE_MIN, NAMESPACE_MAX)

#: Who a resource belongs to.
Owner: TypeAlias = AccountId | GroupId


def owner_bytes(owner: Owner) -> bytes:
    """An owner as it is written on the wire: its ID's prefix byte and its key."""
    if isinstance(owner, AccountId):
        return b"\x05" + owner.x25519_public
    return b"\x03" + owner.ed25519_public


def owner_from_bytes(raw: bytes) -> Owner:
    """The owner of 33 wire bytes (its kind and key); :class:`MalformedCapability` for an
    unknown kind.

    The key is *not* checked to be a valid point here, on purpose: the chain's verifier
    ties the owner to the first link's issuer (an account's X25519 key must be the map of
    the issuer's Ed25519 key, which libsodium refuses unless it is a valid point; a
    group's key must be the issuer's), and checks that issuer's signature, so an owner
    that is not a valid key never passes verification. Checking here would cost a
    hostile chain a scalar multiplication (about 70 µs, more than a signature) for each
    owner it names, before any cheaper check could refuse it.
    """
    if len(raw) != 33:
        raise MalformedCapability("an owner is 33 bytes")
    kind = raw[0]
    if kind == 0x05:
        owner: Owner = object.__new__(AccountId)
        object.__setattr__(owner, "x25519_public", raw[1:])
        return owner
    if kind == 0x03:
        owner = object.__new__(GroupId)
        object.__setattr__(owner, "ed25519_public", raw[1:])
        return owner
    raise MalformedCapability(f"an owner of unknown kind 0x{kind:02x}")


@dataclass(frozen=True, slots=True)
class Resource:
    """An owner, an inclusive namespace range and a set of actions.

    Built by callers (checked: :class:`~veil.onion.errors.InvalidResource`), by
    :func:`parse_resources` from the command line, or from the wire (checked with
    the wire's errors).
    """

    owner: Owner
    first: int
    last: int
    actions: frozenset[str]

    def __post_init__(self) -> None:
        if not isinstance(self.owner, AccountId | GroupId):
            raise InvalidResource("a resource's owner is an AccountId or a GroupId")
        for value in (self.first, self.last):
            if type(value) is not int or not NAMESPACE_MIN <= value <= NAMESPACE_MAX:
                raise InvalidResource(
                    f"a namespace is an integer in {NAMESPACE_MIN}..{NAMESPACE_MAX}"
                )
        if self.first > self.last:
            raise InvalidResource(f"namespace range {self.first}..{self.last} is empty")
        if not isinstance(self.actions, frozenset):
            object.__setattr__(self, "actions", frozenset(self.actions))
        if not self.actions:
            raise InvalidResource("a resource grants at least one action")
        unknown = self.actions - ACTIONS
        if unknown:
            raise InvalidResource(f"unknown action(s): {', '.join(sorted(map(str, unknown)))}")

    @classmethod
    def single(cls, owner: Owner, namespace: int, actions: Iterable[str]) -> Resource:
        return cls(owner, namespace, namespace, frozenset(actions))

    @classmethod
    def everywhere(cls, owner: Owner, actions: Iterable[str]) -> Resource:
        return cls(owner, NAMESPACE_MIN, NAMESPACE_MAX, frozenset(actions))

    def contains(self, namespace: int) -> bool:
        return self.first <= namespace <= self.last

    def to_wire(self) -> dict[str, Any]:
        return {
            "with": owner_bytes(self.owner),
            "ns": [self.first, self.last],
            "can": sorted(self.actions),
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Resource:
        """A resource from its (schema-checked) map; wire errors for what is wrong."""
        owner = owner_from_bytes(obj["with"])
        first, last = obj["ns"]
        if first > last:
            raise MalformedCapability(f"namespace range {first}..{last} is empty")
        can = obj["can"]
        for action in can:
            if action not in ACTIONS:
                raise UnknownAction(f"unknown action {action[:20]!r}")
        for a, b in pairwise(can):
            if not a < b:
                raise MalformedCapability("a resource's actions are sorted, without repeats")
        return cls(owner, first, last, frozenset(can))

    def __str__(self) -> str:
        return format_resource(self)


# --- coverage ---------------------------------------------------------------------------


def grants(resources: Iterable[Resource], owner: Owner, action: str, first: int, last: int) -> bool:
    """Whether ``resources`` together grant ``action`` over every namespace of
    ``first..last`` of ``owner`` (the union of their ranges that hold it)."""
    ranges = sorted(
        (r.first, r.last) for r in resources if action in r.actions and r.owner == owner
    )
    need = first
    for lo, hi in ranges:
        if lo > need:
            return False
        if hi >= need:
            need = hi + 1
            if need > last:
                return True
    return need > last


def missing_actions(granted: Iterable[Resource], wanted: Resource) -> frozenset[str]:
    """The actions of ``wanted`` that ``granted`` does not grant over its whole range
    (empty: ``granted`` covers ``wanted``). For a client's ``is_authorized``."""
    granted = tuple(granted)
    return frozenset(
        action
        for action in wanted.actions
        if not grants(granted, wanted.owner, action, wanted.first, wanted.last)
    )


_METHOD_ACTION: Final = {
    "retrieve": RETRIEVE,
    "store": STORE,
    "delete": DELETE,
    "delete_all": DELETE,
    "expire": EXPIRE,
}


def required(method: str, namespace: int | None) -> tuple[str, int, int]:
    """``(action, first, last)``: what a storage request of ``method`` in ``namespace``
    needs (see the module note). ``namespace`` None (``delete_all`` of every namespace)
    needs the action over the whole range. :class:`InvalidResource` for a method that is
    never signed (``info``, ``get_swarm``) or unknown."""
    action = _METHOD_ACTION.get(method)
    if action is None:
        raise InvalidResource(f"method {method!r} is not authorized by capabilities")
    if namespace is None:
        if method != "delete_all":
            raise InvalidResource(f"{method} names one namespace")
        return action, NAMESPACE_MIN, NAMESPACE_MAX
    if method == "store" and namespace < 0:
        action = POST
    return action, namespace, namespace


# --- the command line -------------------------------------------------------------------

_NAMESPACE_ITEM: Final = re.compile(r"(-?[0-9]{1,5})(?:\.\.(-?[0-9]{1,5}))?")
_ACTION_NAME: Final = re.compile(r"[a-z_]{1,16}")
_MAX_RESOURCE_TEXT: Final = 1024


def parse_resources(text: str, *, self_owner: Owner | None = None) -> tuple[Resource, ...]:
    """The resources of ``OWNER:NAMESPACES:ACTIONS`` (one per namespace item).

    OWNER is ``self`` (``self_owner``, which the caller resolves to the issuing account),
    an account ID (``05...``) or a group ID (``03...``). NAMESPACES is a comma-separated
    list of ``N``, ``FIRST..LAST`` (inclusive) or ``*`` (all). ACTIONS is a comma-separated
    list of :data:`ACTIONS`, or ``*`` for all of them. :class:`InvalidResource` names
    what is wrong (an unknown action by its name).
    """
    if not isinstance(text, str):
        raise InvalidResource("a resource is text: OWNER:NAMESPACES:ACTIONS")
    if len(text) > _MAX_RESOURCE_TEXT:
        raise InvalidResource(f"a resource is at most {_MAX_RESOURCE_TEXT} characters")
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise InvalidResource(f"{text!r}: a resource is OWNER:NAMESPACES:ACTIONS")
    owner_text, namespaces_text, actions_text = (part.strip() for part in parts)
    owner = _parse_owner(owner_text, self_owner)
    actions = _parse_actions(actions_text)
    ranges = [_parse_namespaces(item.strip()) for item in namespaces_text.split(",")]
    return tuple(Resource(owner, first, last, actions) for first, last in ranges)


def _parse_owner(text: str, self_owner: Owner | None) -> Owner:
    if text == "self":
        if self_owner is None:
            raise InvalidResource("'self' needs the issuing account")
        return self_owner
    try:
        if text.startswith(ACCOUNT_PREFIX):
            return AccountId.parse(text)
        if text.startswith(GROUP_PREFIX):
            return GroupId.parse(text)
    except InvalidId as exc:
        raise InvalidResource(f"owner {text[:70]!r}: {exc}") from None
    raise InvalidResource(f"owner {text[:70]!r} is not 'self', an account or a group ID")


def _parse_namespaces(text: str) -> tuple[int, int]:
    if text == "*":
        return ALL_NAMESPACES
    match = _NAMESPACE_ITEM.fullmatch(text)
    if match is None:
        raise InvalidResource(f"namespace {text[:40]!r} is not N, FIRST..LAST or *")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    for value in (first, last):
        if not NAMESPACE_MIN <= value <= NAMESPACE_MAX:
            raise InvalidResource(f"namespace {value} is outside {NAMESPACE_MIN}..{NAMESPACE_MAX}")
    if first > last:
        raise InvalidResource(f"namespace range {first}..{last} is empty")
    return first, last


def _parse_actions(text: str) -> frozenset[str]:
    if text == "*":
        return ACTIONS
    actions = set()
    for item in text.split(","):
        name = item.strip()
        if name not in ACTIONS:
            shown = name[:20] if _ACTION_NAME.fullmatch(name) else repr(name[:20])
            raise InvalidResource(
                f"unknown action {shown}: one of {', '.join(sorted(ACTIONS))}, or *"
            )
        actions.add(name)
    return frozenset(actions)


def format_resource(resource: Resource, *, self_owner: Owner | None = None) -> str:
    """``OWNER:NAMESPACES:ACTIONS`` of a resource, as :func:`parse_resources` reads it."""
    owner = "self" if self_owner is not None and resource.owner == self_owner else resource.owner
    if (resource.first, resource.last) == ALL_NAMESPACES:
        namespaces = "*"
    elif resource.first == resource.last:
        namespaces = str(resource.first)
    else:
        namespaces = f"{resource.first}..{resource.last}"
    actions = "*" if resource.actions == ACTIONS else ",".join(sorted(resource.actions))
    return f"{owner}:{namespaces}:{actions}"


def sorted_resources(resources: Sequence[Resource]) -> tuple[Resource, ...]:
    """Resources in their wire order (by their encoding), so that equal sets encode alike."""
    return tuple(
        sorted(resources, key=lambda r: (owner_bytes(r.owner), r.first, r.last, sorted(r.actions)))
    )
