"""Account audiences (issue #13's contract A): a link whose audience is an account
(``05...``, 33 bytes on the wire) is exercised by any Ed25519 key that maps to it, as the
request's signer and as the issuer of the next link; nothing else exercises it."""

from __future__ import annotations

from typing import Any

import pytest

from veil.onion import errors as E
from veil.onion.capability import (
    Capability,
    Chain,
    DelegatedSigner,
    audience_account,
    audience_bytes,
    audience_matches,
    authorize,
    delegate,
    parse_resources,
    redelegate,
    revoke,
    verify_chain,
    verify_revocation,
)
from veil.onion.keys import GroupId, account_id_of_ed25519

from .capabilityutil import (
    ALICE,
    BOB,
    DAY,
    HOUR,
    NOW,
    account,
    chain_bytes,
    counter_rng,
    digest_of,
    raw_link,
    session_key,
)

CAROL = account("carol")
GROUP_KEY = session_key("group-acc")
GROUP = GroupId(GROUP_KEY.ed25519_public)


def _res(text: str) -> Any:
    return parse_resources(text.replace("G", str(GROUP)))


def _member_chain() -> Chain:
    """group key -> BOB's account (every action) -> CAROL's account (retrieve in 1..2)."""
    first = delegate(GROUP_KEY, BOB.id, _res("G:1..2:*"), now_ms=NOW, rng=counter_rng(b"a"))
    return redelegate(
        first, BOB, CAROL.id, _res("G:1..2:retrieve"), now_ms=NOW, rng=counter_rng(b"b")
    )


def _auth(chain: Chain | bytes, signer: bytes, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "signer": signer,
        "account": GROUP,
        "method": "retrieve",
        "namespace": 1,
        "now_ms": NOW + HOUR,
    }
    args.update(kw)
    return authorize(chain, **args)


def test_an_account_audience_is_exercised_by_the_accounts_key() -> None:
    chain = _member_chain()
    link = chain.links[0]
    assert link.audience == b"\x05" + BOB.x25519_public
    assert link.audience_account == BOB.id
    assert link.audience_did == str(BOB.id)
    assert link.exercised_by(BOB.ed25519_public)
    assert not link.exercised_by(CAROL.ed25519_public)
    proven = _auth(chain, CAROL.ed25519_public)
    assert proven.owner == GROUP
    verify_chain(chain, now_ms=NOW + HOUR)
    # Another key is not the audience.
    with pytest.raises(E.WrongAudience):
        _auth(chain, BOB.ed25519_public)
    with pytest.raises(E.WrongAudience):
        _auth(chain, session_key("k-of-carol").ed25519_public)


def test_the_other_ed25519_key_of_the_account_maps_to_it() -> None:
    # -A (the sign bit flipped) maps to the same X25519 key: it is the account's too
    # (its secret is -a, which only the seed's holder knows), as a node's owner check.
    flipped = bytearray(CAROL.ed25519_public)
    flipped[31] ^= 0x80
    assert account_id_of_ed25519(bytes(flipped)) == CAROL.id
    assert audience_matches(b"\x05" + CAROL.x25519_public, bytes(flipped))


def test_the_next_link_must_be_issued_by_the_accounts_key() -> None:
    first = delegate(GROUP_KEY, BOB.id, _res("G:1..2:*"), now_ms=NOW, rng=counter_rng(b"a"))
    stranger = session_key("stranger")
    forged = raw_link(
        stranger,
        b"\x05" + CAROL.x25519_public,
        _res("G:1..2:retrieve"),
        proof=first.links[0].digest,
    )
    with pytest.raises(E.WrongIssuer, match="audience"):
        _auth(chain_bytes(first.links[0].encoded, forged), CAROL.ed25519_public)
    with pytest.raises(E.InvalidKey):
        redelegate(first, stranger, CAROL.id, _res("G:1..2:retrieve"), now_ms=NOW)


def test_account_audiences_attenuate_as_key_audiences() -> None:
    first = delegate(GROUP_KEY, BOB.id, _res("G:1:retrieve,delegate"), now_ms=NOW)
    with pytest.raises(E.ResourcesWidened):
        redelegate(first, BOB, CAROL.id, _res("G:1..2:retrieve"), now_ms=NOW)
    widened = raw_link(
        BOB,
        b"\x05" + CAROL.x25519_public,
        _res("G:1..2:retrieve"),
        proof=first.links[0].digest,
        exp=NOW + 2 * DAY,
    )
    with pytest.raises((E.ResourcesWidened, E.ExpiryExtended)):
        _auth(chain_bytes(first.links[0].encoded, widened), CAROL.ed25519_public)


@pytest.mark.parametrize(
    "aud",
    [
        b"\x03" + bytes(32),  # a group is no audience
        b"\x05" + bytes(31),  # 32 bytes that are not a valid key: still parsed, never matches
        bytes(31),
        bytes(34),
    ],
)
def test_malformed_audiences(aud: bytes) -> None:
    link = raw_link(GROUP_KEY, aud, _res("G:1:retrieve"))
    if len(aud) == 32:
        # A 32-byte audience is an Ed25519 key; no key signs as it.
        with pytest.raises(E.WrongAudience):
            _auth(chain_bytes(link), BOB.ed25519_public)
        return
    with pytest.raises(E.MalformedCapability):
        Capability.decode(link)


def test_an_invalid_account_key_is_never_exercised() -> None:
    aud = b"\x05" + bytes(32)
    link = raw_link(GROUP_KEY, aud, _res("G:1:retrieve"))
    assert Capability.decode(link).audience_account is not None
    with pytest.raises(E.WrongAudience):
        _auth(chain_bytes(link), BOB.ed25519_public)
    assert not audience_matches(aud, bytes(32))


def test_audience_helpers() -> None:
    assert audience_bytes(BOB.id) == b"\x05" + BOB.x25519_public
    assert audience_bytes(BOB.ed25519_public) == BOB.ed25519_public
    assert audience_account(BOB.ed25519_public) is None
    with pytest.raises(E.InvalidKey):
        audience_bytes(bytes(32))
    with pytest.raises(E.InvalidKey):
        audience_bytes(b"\x05" + BOB.x25519_public)  # bytes of 33: pass an AccountId


def test_revocation_authority_with_an_account_audience() -> None:
    admin = delegate(GROUP_KEY, ALICE.id, _res("G:1..2:*"), now_ms=NOW, rng=counter_rng(b"c"))
    member = delegate(GROUP_KEY, CAROL.id, _res("G:1..2:retrieve"), now_ms=NOW)
    record = revoke(ALICE, member, now_ms=NOW + HOUR, authority=admin)
    assert verify_revocation(record.encoded, now_ms=NOW + HOUR).revoker == ALICE.ed25519_public
    with pytest.raises(E.NotEntitledToRevoke):
        revoke(BOB, member, now_ms=NOW + HOUR, authority=admin)


def test_delegated_signer_for_a_member() -> None:
    chain = _member_chain()
    signer = DelegatedSigner.for_member(CAROL, chain)
    assert signer.owner == GROUP
    assert signer.is_group
    assert signer.ed25519_public == CAROL.ed25519_public
    assert signer.missing("retrieve", 1) == frozenset()
    assert signer.missing("store", 2) == {"store"}
    with pytest.raises(E.InvalidSession):
        _ = signer.account
    with pytest.raises(E.InvalidSession):
        DelegatedSigner.for_member(BOB, chain)
    account_chain = delegate(
        ALICE, BOB.id, parse_resources("self:0:retrieve", self_owner=ALICE.id), now_ms=NOW
    )
    with pytest.raises(E.InvalidSession):
        DelegatedSigner.for_member(BOB, account_chain)
    # An account's chain to another account: the account signs for it (not for_member).
    plain = DelegatedSigner(BOB, account_chain)
    assert plain.account == ALICE.id


def test_revoked_link_with_account_audience_stops_the_chain() -> None:
    chain = _member_chain()
    revoked = {digest_of(chain.links[0].encoded)}
    with pytest.raises(E.CapabilityRevoked):
        _auth(chain, CAROL.ed25519_public, is_revoked=revoked.__contains__)
