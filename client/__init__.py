"""veil's client library: what a service that embeds veil imports.

::

    from veil.client import open_client

    async with open_client(home, "devnet/network.json") as client:
        await client.send(account_id, "your code is 123456", ttl_s=600)

The names below are imported lazily (PEP 562): ``import veil.client.errors`` (or the
``veil`` command's ``--help``) does not pay for trio, httpx and SQLite, and the
sub-modules keep no import order among themselves. ``__all__`` is the public API; the
modules it comes from are :mod:`veil.client.veil_client` (the client),
:mod:`veil.client.messaging`, :mod:`veil.client.home`, :mod:`veil.client.files`,
:mod:`veil.client.delegation` (delegated session keys), :mod:`veil.client.sessions`
(encryption sessions), :mod:`veil.client.bot` (bots and one-time codes),
:mod:`veil.client.channels` (channels), :mod:`veil.client.rooms` (rooms, open groups)
and the policies' modules, and :mod:`veil.client.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from veil.client.bot import (
        Bot,
        BotContext,
        BotError,
        BroadcastProgress,
        BroadcastResult,
        CodeAlreadyUsed,
        CodeCheck,
        TooManyCodes,
        UnknownTicket,
    )
    from veil.client.channels import (
        Channel,
        ChannelInfo,
        create_channel,
        follow,
        list_channels,
        open_channel,
    )
    from veil.client.consensus import DirectoryPolicy
    from veil.client.delegation.issued import Delegation, list_issued
    from veil.client.delegation.session import DelegatedSession, authorize
    from veil.client.delegation.store import SessionStore
    from veil.client.errors import (
        AuthorityUnreachable,
        ClientError,
        DelegationError,
        HomeError,
        InvalidArgument,
        NoIdentity,
        NotAuthorized,
        NotRevocable,
        OnionRequestFailed,
        PassphraseRequired,
        PeerRefused,
        SeedRequired,
        SessionExpired,
        StateError,
        UnknownDelegation,
        WrongPassphrase,
    )
    from veil.client.files import read_network_file
    from veil.client.home import Home
    from veil.client.messaging import (
        DEFAULT_TTL_S,
        MAX_MESSAGE_BYTES,
        InboxMessage,
        MessageTooLarge,
        Sent,
        open_sealed,
    )
    from veil.client.onion_client import RequestPolicy
    from veil.client.paths import PathPolicy
    from veil.client.rooms import (
        PostDeleted,
        Room,
        RoomInfo,
        RoomRefused,
        RoomRules,
        create_room,
        list_rooms,
        open_room,
    )
    from veil.client.sessions import local_sessions
    from veil.client.sessions.backend import MemoryBackend
    from veil.client.sessions.cache import CacheEntry, HomeCacheStore, MemoryCacheStore
    from veil.client.sessions.chat import GroupMessage
    from veil.client.sessions.files import DecryptedFile
    from veil.client.sessions.session import EncryptionSession, SessionManager
    from veil.client.transport import HttpxTransport, Transport, TransportConfig
    from veil.client.veil_client import ClientConfig, Revoked, VeilClient, open_client
    from veil.onion.errors import InvalidTtl, RawMessageHasNoSession, SessionRevoked

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_MESSAGE_BYTES",
    "AuthorityUnreachable",
    "Bot",
    "BotContext",
    "BotError",
    "BroadcastProgress",
    "BroadcastResult",
    "CacheEntry",
    "Channel",
    "ChannelInfo",
    "ClientConfig",
    "ClientError",
    "CodeAlreadyUsed",
    "CodeCheck",
    "DecryptedFile",
    "DelegatedSession",
    "Delegation",
    "DelegationError",
    "DirectoryPolicy",
    "EncryptionSession",
    "GroupMessage",
    "Home",
    "HomeCacheStore",
    "HomeError",
    "HttpxTransport",
    "InboxMessage",
    "InvalidArgument",
    "InvalidTtl",
    "MemoryBackend",
    "MemoryCacheStore",
    "MessageTooLarge",
    "NoIdentity",
    "NotAuthorized",
    "NotRevocable",
    "OnionRequestFailed",
    "PassphraseRequired",
    "PathPolicy",
    "PeerRefused",
    "PostDeleted",
    "RawMessageHasNoSession",
    "RequestPolicy",
    "Revoked",
    "Room",
    "RoomInfo",
    "RoomRefused",
    "RoomRules",
    "SeedRequired",
    "Sent",
    "SessionExpired",
    "SessionManager",
    "SessionRevoked",
    "SessionStore",
    "StateError",
    "TooManyCodes",
    "Transport",
    "TransportConfig",
    "UnknownDelegation",
    "UnknownTicket",
    "VeilClient",
    "WrongPassphrase",
    "authorize",
    "create_channel",
    "create_room",
    "follow",
    "list_channels",
    "list_issued",
    "list_rooms",
    "local_sessions",
    "open_channel",
    "open_client",
    "open_room",
    "open_sealed",
    "read_network_file",
]

# Each public name and the module that defines it.
_ORIGIN = {
    "DEFAULT_TTL_S": "veil.client.messaging",
    "MAX_MESSAGE_BYTES": "veil.client.messaging",
    "AuthorityUnreachable": "veil.client.errors",
    "ClientConfig": "veil.client.veil_client",
    "ClientError": "veil.client.errors",
    "DelegatedSession": "veil.client.delegation.session",
    "Delegation": "veil.client.delegation.issued",
    "DelegationError": "veil.client.errors",
    "DirectoryPolicy": "veil.client.consensus",
    "Home": "veil.client.home",
    "HomeError": "veil.client.errors",
    "HttpxTransport": "veil.client.transport",
    "InboxMessage": "veil.client.messaging",
    "InvalidArgument": "veil.client.errors",
    "InvalidTtl": "veil.onion.errors",
    "MessageTooLarge": "veil.client.messaging",
    "NoIdentity": "veil.client.errors",
    "NotAuthorized": "veil.client.errors",
    "NotRevocable": "veil.client.errors",
    "OnionRequestFailed": "veil.client.errors",
    "PassphraseRequired": "veil.client.errors",
    "PathPolicy": "veil.client.paths",
    "PeerRefused": "veil.client.errors",
    "RequestPolicy": "veil.client.onion_client",
    "Revoked": "veil.client.veil_client",
    "SeedRequired": "veil.client.errors",
    "Sent": "veil.client.messaging",
    "SessionExpired": "veil.client.errors",
    "SessionStore": "veil.client.delegation.store",
    "StateError": "veil.client.errors",
    "Transport": "veil.client.transport",
    "TransportConfig": "veil.client.transport",
    "UnknownDelegation": "veil.client.errors",
    "VeilClient": "veil.client.veil_client",
    "WrongPassphrase": "veil.client.errors",
    "authorize": "veil.client.delegation.session",
    "list_issued": "veil.client.delegation.issued",
    "open_client": "veil.client.veil_client",
    "open_sealed": "veil.client.messaging",
    "read_network_file": "veil.client.files",
    "CacheEntry": "veil.client.sessions.cache",
    "DecryptedFile": "veil.client.sessions.files",
    "EncryptionSession": "veil.client.sessions.session",
    "GroupMessage": "veil.client.sessions.chat",
    "HomeCacheStore": "veil.client.sessions.cache",
    "MemoryBackend": "veil.client.sessions.backend",
    "MemoryCacheStore": "veil.client.sessions.cache",
    "SessionManager": "veil.client.sessions.session",
    "local_sessions": "veil.client.sessions",
    "SessionRevoked": "veil.onion.errors",
    "RawMessageHasNoSession": "veil.onion.errors",
    "Bot": "veil.client.bot",
    "BotContext": "veil.client.bot",
    "BotError": "veil.client.bot",
    "BroadcastProgress": "veil.client.bot",
    "BroadcastResult": "veil.client.bot",
    "CodeAlreadyUsed": "veil.client.bot",
    "CodeCheck": "veil.client.bot",
    "TooManyCodes": "veil.client.bot",
    "UnknownTicket": "veil.client.bot",
    "Channel": "veil.client.channels",
    "ChannelInfo": "veil.client.channels",
    "create_channel": "veil.client.channels",
    "follow": "veil.client.channels",
    "list_channels": "veil.client.channels",
    "open_channel": "veil.client.channels",
    "PostDeleted": "veil.client.rooms",
    "Room": "veil.client.rooms",
    "RoomInfo": "veil.client.rooms",
    "RoomRefused": "veil.client.rooms",
    "RoomRules": "veil.client.rooms",
    "create_room": "veil.client.rooms",
    "list_rooms": "veil.client.rooms",
    "open_room": "veil.client.rooms",
}


def __getattr__(name: str) -> Any:
    module = _ORIGIN.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
