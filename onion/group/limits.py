"""The constants of encryption sessions: namespaces, sizes, counts, domains, purposes.

Design note
-----------
Constants only, read by every other module of :mod:`veil.onion.group`. Every byte limit
is checked before a byte is parsed, every count by the schema before anything is
compared, decrypted or verified, so a hostile record, message or file header costs a
node or a client a bounded amount of work.

A session's state and its messages live in the swarm of its group ID (``03...``), in two
private namespaces (positive: owner-only, never public): :data:`STATE_NAMESPACE` holds
the signed records (genesis, members, revocations, key epochs, the end), and
:data:`MESSAGES_NAMESPACE` the encrypted group messages. Both are private, so that a
node serves them only to a request signed by the session key or by a member's
capability chain (:mod:`~veil.onion.group.rights`).
"""

from __future__ import annotations

from typing import Final

VERSION: Final = 1

#: The namespace of the session's signed records, and that of its messages.
STATE_NAMESPACE: Final = 1
MESSAGES_NAMESPACE: Final = 2

#: The storage RPC's message body limit (veil.onion.rpc.limits.MAX_BODY): a record is
#: stored as one message, so no record may be larger.
MAX_BODY: Final = 76_800
#: Bytes of one encoded record (a key epoch of MAX_WRAPS members and a chain of 16 KiB
#: fits: 400 x 124 + 16,400 + 300 bytes).
MAX_RECORD_SIZE: Final = 72 * 1024
#: Members one key epoch wraps its key for.
MAX_WRAPS: Final = 400
#: Epoch keys one member record wraps for its new member (the heads of the epoch DAG).
MAX_MEMBER_WRAPS: Final = 16
#: Parents one key epoch names (the heads it merges).
MAX_PARENTS: Final = 16
#: An epoch names at most this many revocations it follows (its "revs").
MAX_FOLLOWS: Final = 16
#: An epoch that a member writes by virtue of its revocations (no ``revoke`` right) is
#: dated at most this long after each of them (10 minutes).
FOLLOW_WINDOW_MS: Final = 10 * 60 * 1000
#: Characters of a session's metadata (not encrypted, as Seald's).
MAX_METADATA: Final = 1024
#: Records a session state is built from (a node's and a client's bound).
MAX_RECORDS: Final = 20_000

KEY_BYTES: Final = 32
SALT_BYTES: Final = 16
DIGEST_BYTES: Final = 32
#: A wrapped key: ephemeral X25519 key (32) + XChaCha20-Poly1305 of 32 bytes (48).
WRAP_BYTES: Final = 32 + 32 + 16

#: Largest time in ms (CBOR's signed 64-bit range, as the storage RPC's).
MAX_TIME_MS: Final = 2**63 - 1
#: The storage RPC's clock skew.
DEFAULT_SKEW_MS: Final = 60_000

#: Signature domains (crypto.sign prefixes them with ``veil/`` and ends them with NUL).
GENESIS_DOMAIN: Final = b"group-genesis/v1"
MEMBER_DOMAIN: Final = b"group-member/v1"
EPOCH_DOMAIN: Final = b"group-epoch/v1"
END_DOMAIN: Final = b"group-end/v1"
MESSAGE_DOMAIN: Final = b"group-msg/v1"

#: BLAKE2b ``person`` of digests and key derivations (at most 16 bytes each).
RECORD_DIGEST_PURPOSE: Final = b"veil/grp-record"
WRAP_PURPOSE: Final = b"veil/grp-wrap"
COMMIT_PURPOSE: Final = b"veil/grp-commit"
BACK_PURPOSE: Final = b"veil/grp-back"
MESSAGE_KEY_PURPOSE: Final = b"veil/grp-msgkey"
FILE_KEY_PURPOSE: Final = b"veil/grp-filekey"
#: Associated-data prefixes of the AEADs.
WRAP_AD: Final = b"veil/group-wrap/v1\x00"
MESSAGE_AD: Final = b"veil/group-msg/v1\x00"

#: Group messages: the largest plaintext body, the largest encrypted data (it is stored
#: as one message: within the body limit with room for the JSON around its base64), and
#: the largest text :func:`~veil.onion.group.messages.decrypt_message` reads.
MAX_MESSAGE_BODY: Final = 48 * 1024
MAX_MESSAGE_DATA: Final = 56 * 1024
MAX_MESSAGE_TEXT: Final = 80_000

#: Files: the plaintext chunk, the largest header, the largest file name.
FILE_CHUNK: Final = 64 * 1024
MAX_FILE_HEADER: Final = 1024
MAX_FILENAME: Final = 255
#: libsodium's limit of one secretstream (about 256 GiB).
MAX_FILE_SIZE: Final = 2**38
