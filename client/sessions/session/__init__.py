"""Encryption sessions, Seald-style: :class:`EncryptionSession`, create and retrieve.

Design note
-----------
A session is one symmetric key per epoch for many messages and files, with members and
their rights (``read``, ``forward``, ``revoke``), as in Seald's SDK; its rules are the
sans-IO core's (:mod:`veil.onion.group`), its records live in the swarm of its ID
(:mod:`veil.client.sessions.backend`). This package is the API a user holds::

    session = await client.create_encryption_session([bob, carol], metadata="q3")
    text = session.encrypt_message("hello")          # '{"sessionId": "03...", "data": ...}'
    same = await client.retrieve_encryption_session(encrypted_message=text)
    same.decrypt_message(text)                       # 'hello'
    await session.add_recipients([dave], rights=["read"])
    await session.revoke_recipients([carol])         # rotates: carol reads nothing newer
    await session.revoke()                           # the whole session: SessionRevoked

Members are named by account ID (``05...``; text or :class:`~veil.onion.keys.AccountId`).

One module per job, each importing only those above it in this list:

* :mod:`~veil.client.sessions.session.naming`: account and session IDs as the API takes
  them (:data:`RecipientsLike`);
* :mod:`~veil.client.sessions.session.encryption_session`: :class:`EncryptionSession`,
  one session as a member sees it (messages, members, revocations, files, chat);
* :mod:`~veil.client.sessions.session.manager`: :class:`SessionManager`, create and
  retrieve (the client's ``sessions``), the cache of states.
"""

from __future__ import annotations

from veil.client.sessions.session.encryption_session import DEFAULT_MESSAGE_TTL_S, EncryptionSession
from veil.client.sessions.session.manager import (
    DEFAULT_REFRESH_AFTER_S,
    PARSED_STATES,
    SessionManager,
)
from veil.client.sessions.session.naming import RecipientsLike

__all__ = [
    "DEFAULT_MESSAGE_TTL_S",
    "DEFAULT_REFRESH_AFTER_S",
    "PARSED_STATES",
    "EncryptionSession",
    "RecipientsLike",
    "SessionManager",
]
