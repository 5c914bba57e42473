"""The directory: node descriptors, consensus documents, and the network's bootstrap file.

Design note
-----------
veil has no blockchain. Directory authorities (one on a devnet, several in production)
sign a *consensus*: the list of nodes that clients may use and the swarm of each.
Clients and nodes pin the authorities' Ed25519 keys (:class:`NetworkFile`) and accept a
consensus only with valid signatures from at least a threshold of those keys. This
package is sans-IO: documents are bytes in and typed objects out; the time is a
parameter; every refusal is a typed error from :mod:`veil.onion.errors`. One module per
document, re-exported here:

* :mod:`~veil.onion.directory.fields`: the checks and schema fields they share;
* :mod:`~veil.onion.directory.descriptors`: a node's signed descriptor;
* :mod:`~veil.onion.directory.consensus`: the consensus body, its nodes and swarms;
* :mod:`~veil.onion.directory.signatures`: signing, assembling and verifying a consensus;
* :mod:`~veil.onion.directory.network_file`: ``network.json``, the pinned authorities.

Signed documents. A descriptor and a consensus have the same shape: a *body*, which is
canonical CBOR (RFC 8949 core deterministic encoding, :func:`veil.onion.cbor.encode`)
carried as a byte string, and the signatures over exactly those bytes. Signing the
bytes that travel, instead of a re-encoding of decoded fields, means a reader never has
to reproduce an encoding to check a signature. Bodies must still be canonical (they are
decoded with ``canonical=True``), so that one content has one encoding: authorities that
agree on the inputs produce byte-identical bodies and their signatures add up.

Limits, checked before decoding: a descriptor is at most 1 KiB; a consensus at most
:data:`MAX_CONSENSUS_SIZE` (room for :data:`MAX_NODES` nodes with the longest fields
and :data:`MAX_SIGNATURES` signatures).
"""

from __future__ import annotations

from .consensus import (
    CONSENSUS_DOMAIN,
    DEFAULT_INTERVAL_MS,
    DEFAULT_LIFETIME_INTERVALS,
    MAX_CONSENSUS_LIFETIME_MS,
    MAX_CONSENSUS_SIZE,
    MAX_NODES,
    MAX_SIGNATURES,
    MAX_SWARM_TARGET,
    Consensus,
    ConsensusNode,
    ConsensusSignature,
    Swarm,
    make_consensus_body,
    parse_consensus_body,
)
from .descriptors import (
    DEFAULT_DESCRIPTOR_LIFETIME_MS,
    DESCRIPTOR_DOMAIN,
    MAX_DESCRIPTOR_LIFETIME_MS,
    MAX_DESCRIPTOR_SIZE,
    NodeDescriptor,
    make_descriptor,
    parse_descriptor,
)
from .fields import CLOCK_SKEW_MS, FORMAT_VERSION, MAX_HOST_LEN, MAX_VERSION_LEN
from .network_file import MAX_AUTHORITIES, MAX_NETWORK_FILE_SIZE, Authority, NetworkFile
from .signatures import assemble, sign_consensus, split_consensus, verify_consensus

__all__ = [
    "CLOCK_SKEW_MS",
    "CONSENSUS_DOMAIN",
    "DEFAULT_DESCRIPTOR_LIFETIME_MS",
    "DEFAULT_INTERVAL_MS",
    "DEFAULT_LIFETIME_INTERVALS",
    "DESCRIPTOR_DOMAIN",
    "FORMAT_VERSION",
    "MAX_AUTHORITIES",
    "MAX_CONSENSUS_LIFETIME_MS",
    "MAX_CONSENSUS_SIZE",
    "MAX_DESCRIPTOR_LIFETIME_MS",
    "MAX_DESCRIPTOR_SIZE",
    "MAX_HOST_LEN",
    "MAX_NETWORK_FILE_SIZE",
    "MAX_NODES",
    "MAX_SIGNATURES",
    "MAX_SWARM_TARGET",
    "MAX_VERSION_LEN",
    "Authority",
    "Consensus",
    "ConsensusNode",
    "ConsensusSignature",
    "NetworkFile",
    "NodeDescriptor",
    "Swarm",
    "assemble",
    "make_consensus_body",
    "make_descriptor",
    "parse_consensus_body",
    "parse_descriptor",
    "sign_consensus",
    "split_consensus",
    "verify_consensus",
]
