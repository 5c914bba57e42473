"""Shared helpers of tests/test_capability*.py: fixed keys, a deterministic rng, builders
that bypass the library's own checks (to make the hostile chains a node must refuse)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

from veil.onion import cbor, crypto
from veil.onion.capability import (
    LINK_DOMAIN,
    Capability,
    Resource,
    SessionKey,
    parse_resources,
)
from veil.onion.crypto import Rng
from veil.onion.keys import Account

NOW = 1_760_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR


class CounterRng:
    """Deterministic rng: BLAKE2b-512(key=seed, u64be(0)) || (..., u64be(1)) || ..."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0
        self.buffer = b""

    def __call__(self, n: int) -> bytes:
        while len(self.buffer) < n:
            block = struct.pack(">Q", self.counter)
            self.buffer += hashlib.blake2b(block, key=self.seed, digest_size=64).digest()
            self.counter += 1
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def counter_rng(seed: bytes) -> Rng:
    return CounterRng(seed)


def seed_of(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=32).digest()


def account(name: str) -> Account:
    return Account(seed_of(name))


def session_key(name: str) -> SessionKey:
    return SessionKey(seed_of("session/" + name))


ALICE = account("alice")
BOB = account("bob")


def res(text: str, owner: Account = ALICE) -> tuple[Resource, ...]:
    return parse_resources(text, self_owner=owner.id)


def raw_link(
    signer: Any,
    audience: bytes,
    resources: Sequence[dict[str, Any]] | Sequence[Resource],
    *,
    iat: int = NOW,
    nbf: int | None = None,
    exp: int = NOW + DAY,
    proof: bytes | None = None,
    statement: str | None = None,
    nonce: bytes = bytes(16),
    extra: dict[str, Any] | None = None,
    sign_as: Any = None,
) -> bytes:
    """A link's bytes built by hand, signed, with none of the library's checks: for the
    hostile cases. ``sign_as`` signs with another key than ``signer`` (whose public key
    is the one written as ``iss``)."""
    body: dict[str, Any] = {
        "v": 1,
        "iss": signer.ed25519_public,
        "aud": audience,
        "iat": iat,
        "nbf": iat if nbf is None else nbf,
        "exp": exp,
        "nonce": nonce,
        "res": [r.to_wire() if isinstance(r, Resource) else r for r in resources],
    }
    if proof is not None:
        body["prf"] = proof
    if statement is not None:
        body["stmt"] = statement
    if extra:
        body.update(extra)
    key = (sign_as or signer).ed25519_secret
    body["sig"] = crypto.sign(key, LINK_DOMAIN, cbor.encode(body))
    return cbor.encode(body)


def chain_bytes(*links: bytes) -> bytes:
    return cbor.encode(list(links))


def digest_of(link: bytes) -> bytes:
    return Capability.decode(link).digest


def linear_chain(
    length: int, resources: str = "self:*:*", *, exp: int = NOW + DAY
) -> tuple[bytes, list[SessionKey]]:
    """The bytes of ALICE -> k1 -> k2 -> ... -> k_length, each link granting
    ``resources`` (raw links: no limit on the length)."""
    keys = [session_key(f"k{i}") for i in range(1, length + 1)]
    signers: list[Any] = [ALICE, *keys]
    links: list[bytes] = []
    proof = None
    for i in range(length):
        link = raw_link(signers[i], keys[i].ed25519_public, res(resources), exp=exp, proof=proof)
        proof = digest_of(link)
        links.append(link)
    return chain_bytes(*links), keys
