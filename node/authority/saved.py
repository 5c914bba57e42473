"""What an authority keeps on disk, so that a restart loses nothing.

Design note
-----------
Two files in the data directory: ``descriptors.cbor`` (the registered descriptors, a
CBOR list of their signed bytes) and ``consensus.cbor`` (the latest consensus that a
threshold of pinned authorities signed). Both are written with
:func:`veil.node.keystore.write_file_atomic` (in a worker thread while the authority runs;
blocking at shutdown), so a crash leaves the old file or the new one. At start
(:meth:`Saved.load_saved`) every saved descriptor is parsed again at the current time
and counts as unchecked; the saved consensus is served again only while it is valid
and still carries a threshold of valid pinned signatures. An unreadable or invalid file
is logged and ignored: the authority starts empty rather than not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import trio

from veil.onion import crypto
from veil.onion.cbor import Field, encode
from veil.onion.cbor import decode as cbor_decode
from veil.onion.directory import (
    CONSENSUS_DOMAIN,
    MAX_CONSENSUS_SIZE,
    MAX_DESCRIPTOR_SIZE,
    MAX_NODES,
    ConsensusSignature,
    parse_consensus_body,
    parse_descriptor,
    split_consensus,
)
from veil.onion.errors import BadSignature, ProtocolError

from ..keystore import write_file_atomic
from ..logging import log_event
from .registry import Registry
from .state import CONSENSUS_FILE, DESCRIPTORS_FILE, HeldConsensus

__all__ = ["Saved", "pinned_signatures"]

log = logging.getLogger("veil.authority")

_SAVED_DESCRIPTORS = Field(
    list, max_len=MAX_NODES, items=Field(bytes, min_len=1, max_len=MAX_DESCRIPTOR_SIZE)
)


class Saved(Registry):
    """Saving and loading the registry and the latest verified consensus."""

    async def _after_signatures_changed(self, doc: HeldConsensus) -> None:
        if len(doc.signatures) >= self.threshold and self.latest_verified() is doc:
            await self._save(self.data_dir / CONSENSUS_FILE, doc.data)

    async def _save(self, path: Path, data: bytes) -> None:
        try:
            await trio.to_thread.run_sync(write_file_atomic, path, data, 0o644)
        except OSError as exc:
            log_event(log, logging.WARNING, "cannot_save", path=str(path), error=str(exc))

    async def _save_registry(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        raws = sorted(r.raw for r in self.registry.values())
        await self._save(self.data_dir / DESCRIPTORS_FILE, encode(raws))

    def save_registry_now(self) -> None:
        """Blocking save of the registry (at shutdown)."""
        raws = sorted(r.raw for r in self.registry.values())
        try:
            write_file_atomic(self.data_dir / DESCRIPTORS_FILE, encode(raws), 0o644)
        except OSError as exc:
            log_event(log, logging.WARNING, "cannot_save", error=str(exc))

    def load_saved(self) -> None:
        """Load the saved registry and consensus (blocking; at start, before serving).

        Unreadable or invalid files are logged and ignored; every descriptor is parsed
        again at the current time and checked before it counts as live.
        """
        now_ms = self.clock()
        raws = read_saved_descriptors(self.data_dir / DESCRIPTORS_FILE)
        for raw in raws:
            try:
                descriptor = parse_descriptor(raw, now_ms=now_ms)
            except ProtocolError:
                continue
            if descriptor.node_id not in self.registry:
                self.register(descriptor, raw)
        if raws:
            log_event(log, logging.INFO, "descriptors_loaded", nodes=len(self.registry))
        path = self.data_dir / CONSENSUS_FILE
        try:
            with path.open("rb") as f:
                data = f.read(MAX_CONSENSUS_SIZE + 1)
        except OSError:
            return
        try:
            body, signatures = split_consensus(data)
            consensus = parse_consensus_body(body)
        except ProtocolError as exc:
            log_event(log, logging.WARNING, "saved_consensus_discarded", error=str(exc))
            return
        if now_ms >= consensus.valid_until_ms:
            log_event(log, logging.INFO, "saved_consensus_stale", epoch=consensus.epoch)
            return
        valid = pinned_signatures(body, signatures, self.network.pinned_keys)
        if len(valid) < self.threshold:
            return
        doc = HeldConsensus(consensus, valid, ours=self.key in valid)
        doc.reassemble()
        self.documents[consensus.epoch] = doc
        log_event(log, logging.INFO, "saved_consensus_loaded", epoch=consensus.epoch)


def pinned_signatures(
    body: bytes, signatures: Iterable[ConsensusSignature], pinned: Iterable[bytes]
) -> dict[bytes, bytes]:
    """The valid signatures of ``body`` by ``pinned`` keys, key to signature (the first
    valid one of a key that signed twice)."""
    keys = set(pinned)
    valid: dict[bytes, bytes] = {}
    for sig in signatures:
        if sig.key in keys and sig.key not in valid:
            try:
                crypto.verify(sig.key, CONSENSUS_DOMAIN, body, sig.signature)
            except BadSignature:
                continue
            valid[sig.key] = sig.signature
    return valid


def read_saved_descriptors(path: Path) -> list[bytes]:
    """The descriptors saved in ``path`` (none if it is missing or invalid: logged)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_NODES * MAX_DESCRIPTOR_SIZE + 16)
    except OSError:
        return []
    try:
        items = cbor_decode(data, max_size=MAX_NODES * MAX_DESCRIPTOR_SIZE + 8, max_depth=1)
        _SAVED_DESCRIPTORS.check(items, "descriptors")
    except ProtocolError as exc:
        log_event(log, logging.WARNING, "saved_descriptors_discarded", error=str(exc))
        return []
    return list(items)
