"""The signed records of an encryption session: formats, epoch keys, builders.

A session's state is a *set* of these records (:mod:`~veil.onion.group.state`). One
module per job, each importing only those above it in this list:

* :mod:`~veil.onion.group.records.formats`: the five kinds (genesis, member, revoke,
  epoch, end) as CBOR maps, their schemas, signatures and digests,
  :func:`decode_record` (size, then canonical CBOR, then schema; no signature);
* :mod:`~veil.onion.group.records.epoch_keys`: an epoch's key wrapped for a member
  (:func:`wrap_key`, :func:`unwrap_key`), its commitment, the chain back to its
  parents' keys (:func:`open_back`);
* :mod:`~veil.onion.group.records.builders`: ``make_*``, a record of each kind, signed.
"""

from __future__ import annotations

from .builders import make_end, make_epoch, make_genesis, make_member, make_revoke
from .epoch_keys import epoch_commitment, open_back, unwrap_key, wrap_key
from .formats import (
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

__all__ = [
    "DELEGATION",
    "POLICIES",
    "RIGHTS_POLICY",
    "EndRecord",
    "EpochRecord",
    "GenesisRecord",
    "MemberRecord",
    "Record",
    "RevokeRecord",
    "decode_record",
    "epoch_commitment",
    "make_end",
    "make_epoch",
    "make_genesis",
    "make_member",
    "make_revoke",
    "open_back",
    "record_digest",
    "unwrap_key",
    "wrap_key",
]
