"""Encryption sessions (Seald-style): signed records, their state, messages and files
(issue #13).

Design note
-----------
An encryption session is one symmetric key (per epoch) for many messages and files,
with members and their rights, as in Seald's SDK. Unlike Seald, whose revocation only
changes a server's access list, revoking here rotates the key, so a revoked member
cannot read what is encrypted afterwards even with every key it ever held. The rules
live here, sans-IO, and are used by nodes (what to store) and clients (what to
believe) alike.

* A session has its own Ed25519 key; its ID is the group ID ``03`` + hex of it. The
  creator keeps the key (its administrator key).
* Membership is a capability chain (:mod:`veil.onion.capability`) from the session's
  key, whose resources carry Seald's rights ``read``, ``forward``, ``revoke``
  (:mod:`~veil.onion.group.rights`); so nodes check members' requests with the same
  :func:`~veil.onion.capability.authorize` as delegated keys, and a member with
  ``forward`` delegates to those it adds (giving no right it lacks).
* A revocation is a capability revocation of a member's link, in a grow-only set; the
  genesis record's policy (``rights`` or ``delegation``, Seald's two published rules)
  says who may revoke, and nobody may revoke the creator.
* Key epochs are signed records naming their parent epochs; concurrent rotations give
  two heads, both accepted, that the next rotation merges.
* The state is a pure function of the *set* of records
  (:class:`~veil.onion.group.state.SessionState`), so replicas merge by union in any
  order; :func:`~veil.onion.group.state.check_record` is a node's question before it
  stores a record.

One module per job, each importing only those above it in this list:

* :mod:`~veil.onion.group.limits`: namespaces, sizes, counts, domains, purposes;
* :mod:`~veil.onion.group.rights`: rights and the capability resources carrying them;
* :mod:`~veil.onion.group.records`: the record formats, wraps, commitments;
* :mod:`~veil.onion.group.state`: :class:`SessionState`, :func:`check_record` and
  :func:`check_access` (a node's two questions);
* :mod:`~veil.onion.group.session`: building records (create, add, revoke, rotate, end);
* :mod:`~veil.onion.group.messages`: encrypted messages (JSON or raw);
* :mod:`~veil.onion.group.files`: encrypted files (secretstream, incremental).

Every refusal is a typed error of the :class:`~veil.onion.errors.GroupError` family (or
a capability error from a chain), each with its wire status;
:class:`~veil.onion.errors.InvalidRights` and
:class:`~veil.onion.errors.RawMessageHasNoSession` (``InvalidValue``) for a caller's
input.
"""

from __future__ import annotations

from .files import (
    FILE_MAGIC,
    FileDecryptor,
    FileEncryptor,
    FileHeader,
    file_key,
    read_file_header,
)
from .limits import (
    FILE_CHUNK,
    MAX_FILE_HEADER,
    MAX_MESSAGE_BODY,
    MAX_MESSAGE_TEXT,
    MAX_RECORD_SIZE,
    MAX_WRAPS,
    MESSAGES_NAMESPACE,
    STATE_NAMESPACE,
)
from .messages import (
    DecryptedMessage,
    decrypt_message,
    encrypt_message,
    message_key,
    message_session_id,
    parse_message,
)
from .records import (
    DELEGATION,
    POLICIES,
    RIGHTS_POLICY,
    EndRecord,
    EpochRecord,
    GenesisRecord,
    MemberRecord,
    Record,
    RevokeRecord,
    decode_record,
    record_digest,
)
from .rights import (
    ALL_RIGHTS,
    DEFAULT_RIGHTS,
    FORWARD,
    READ,
    REVOKE_RIGHT,
    Rights,
    check_rights,
    resources_of_rights,
    rights_of_resources,
)
from .session import (
    NewSession,
    add_members,
    create_session,
    end_session,
    revoke_members,
    rotate,
)
from .state import KeyHolder, Member, SessionState, check_access, check_record

__all__ = [
    "ALL_RIGHTS",
    "DEFAULT_RIGHTS",
    "DELEGATION",
    "FILE_CHUNK",
    "FILE_MAGIC",
    "FORWARD",
    "MAX_FILE_HEADER",
    "MAX_MESSAGE_BODY",
    "MAX_MESSAGE_TEXT",
    "MAX_RECORD_SIZE",
    "MAX_WRAPS",
    "MESSAGES_NAMESPACE",
    "POLICIES",
    "READ",
    "REVOKE_RIGHT",
    "RIGHTS_POLICY",
    "STATE_NAMESPACE",
    "DecryptedMessage",
    "EndRecord",
    "EpochRecord",
    "FileDecryptor",
    "FileEncryptor",
    "FileHeader",
    "GenesisRecord",
    "KeyHolder",
    "Member",
    "MemberRecord",
    "NewSession",
    "Record",
    "RevokeRecord",
    "Rights",
    "SessionState",
    "add_members",
    "check_access",
    "check_record",
    "check_rights",
    "create_session",
    "decode_record",
    "decrypt_message",
    "encrypt_message",
    "end_session",
    "file_key",
    "message_key",
    "message_session_id",
    "parse_message",
    "read_file_header",
    "record_digest",
    "resources_of_rights",
    "revoke_members",
    "rights_of_resources",
    "rotate",
]
