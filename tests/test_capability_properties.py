"""Property tests of veil.onion.capability: hostile bytes and text to every parser raise
only veil's typed errors; random narrowing chains verify; any widening is refused."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from veil.onion import cbor
from veil.onion import errors as E
from veil.onion.capability import (
    ACTIONS,
    DELEGATE,
    Capability,
    Chain,
    Resource,
    Revocation,
    authorize,
    decode_session,
    delegate,
    parse_did_key,
    parse_resources,
    redelegate,
    required,
    verify_chain,
    verify_revocation,
)

from .capabilityutil import (
    ALICE,
    DAY,
    NOW,
    chain_bytes,
    counter_rng,
    digest_of,
    raw_link,
    session_key,
)

KEYS = [session_key(f"p{i}") for i in range(9)]
NS_MIN, NS_MAX = -32768, 32767


def _only_typed_errors(fn: Any, *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except E.VeilError as exc:  # ProtocolError from the wire, InvalidValue from a caller
        assert isinstance(exc, E.ProtocolError | E.InvalidValue), type(exc)


_cbor_leaf = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
)
_cbor_value = st.recursive(
    _cbor_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["v", "iss", "aud", "res", "ns", "can", "with", "x"]), inner, max_size=5
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), _cbor_value.map(cbor.encode)))
def test_random_bytes_to_every_parser_raise_only_typed_errors(data: bytes) -> None:
    _only_typed_errors(Capability.decode, data)
    _only_typed_errors(Chain.decode, data)
    _only_typed_errors(Chain.decode, cbor.encode([data]))
    _only_typed_errors(Revocation.decode, data)
    _only_typed_errors(verify_chain, data, now_ms=NOW)
    _only_typed_errors(verify_revocation, data, now_ms=NOW)
    _only_typed_errors(
        authorize,
        data,
        signer=KEYS[0].ed25519_public,
        account=ALICE.id,
        method="store",
        namespace=1,
        now_ms=NOW,
    )


@settings(max_examples=300)
@given(st.text(max_size=120))
def test_random_text_to_every_text_parser_raises_only_typed_errors(text: str) -> None:
    _only_typed_errors(parse_did_key, text)
    _only_typed_errors(parse_did_key, "did:key:z" + text)
    _only_typed_errors(parse_resources, text, self_owner=ALICE.id)
    _only_typed_errors(parse_resources, "self:" + text, self_owner=ALICE.id)
    _only_typed_errors(decode_session, text)
    _only_typed_errors(decode_session, "veil-session-v1:" + text)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=6), st.integers(min_value=0, max_value=600))
def test_flipped_bytes_of_a_valid_chain_are_refused_or_identical(
    flip: bytes, position: int
) -> None:
    """Any change to a signed chain is refused with a typed error (none verifies)."""
    chain = delegate(
        ALICE,
        KEYS[0].ed25519_public,
        parse_resources("self:1..9:store", self_owner=ALICE.id),
        now_ms=NOW,
        rng=counter_rng(b"flip"),
    )
    data = bytearray(chain.encoded)
    position %= len(data)
    for i, b in enumerate(flip):
        if position + i < len(data):
            data[position + i] ^= b or 1
    try:
        verify_chain(bytes(data), now_ms=NOW)
    except E.CapabilityError:
        return
    raise AssertionError("a modified chain verified")


# --- random narrowing chains -----------------------------------------------------------


@st.composite
def _narrower(draw: st.DrawFn, parent: Resource, last: bool) -> Resource:
    first = draw(st.integers(min_value=parent.first, max_value=parent.last))
    end = draw(st.integers(min_value=first, max_value=parent.last))
    pool = sorted(parent.actions - ({DELEGATE} if not last else set()))
    if not last:
        extra = draw(st.sets(st.sampled_from(pool), max_size=len(pool))) if pool else set()
        actions = {DELEGATE, *extra}
    else:
        actions = set(draw(st.sets(st.sampled_from(sorted(parent.actions)), min_size=1)))
    return Resource(parent.owner, first, end, frozenset(actions))


@st.composite
def narrowing_chains(draw: st.DrawFn) -> tuple[Chain, list[Resource]]:
    length = draw(st.integers(min_value=1, max_value=8))
    base = Resource(
        ALICE.id,
        draw(st.integers(min_value=NS_MIN, max_value=0)),
        draw(st.integers(min_value=0, max_value=NS_MAX)),
        frozenset({DELEGATE, *draw(st.sets(st.sampled_from(sorted(ACTIONS)), min_size=1))}),
    )
    resources = [base]
    exp = NOW + draw(st.integers(min_value=DAY, max_value=20 * DAY))
    chain = delegate(
        ALICE,
        KEYS[0].ed25519_public,
        [base],
        now_ms=NOW,
        lifetime_ms=exp - NOW,
        rng=counter_rng(b"n0"),
    )
    for i in range(1, length):
        parent = resources[-1]
        child = draw(_narrower(parent, last=i == length - 1))
        exp = draw(st.integers(min_value=NOW + 1, max_value=exp))
        chain = redelegate(
            chain,
            KEYS[i - 1],
            KEYS[i].ed25519_public,
            [child],
            now_ms=NOW,
            expires_ms=exp,
            rng=counter_rng(bytes([i])),
        )
        resources.append(child)
    return chain, resources


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(narrowing_chains(), st.data())
def test_random_narrowing_chains_verify(
    built: tuple[Chain, list[Resource]], data: st.DataObject
) -> None:
    chain, resources = built
    proven = verify_chain(chain.encoded, now_ms=NOW)
    leaf = resources[-1]
    assert proven.resources == (leaf,)
    assert proven.expires_ms == chain.links[-1].expires_ms
    ns = data.draw(st.integers(min_value=leaf.first, max_value=leaf.last))
    for method in ("retrieve", "store", "delete", "expire"):
        action, _, _ = required(method, ns)
        ok = action in leaf.actions
        try:
            authorize(
                chain.encoded,
                signer=chain.audience,
                account=ALICE.id,
                method=method,
                namespace=ns,
                now_ms=NOW,
            )
        except E.ActionNotCovered as exc:
            assert not ok and exc.action == action
        else:
            assert ok


@st.composite
def _wider(draw: st.DrawFn, parent: Resource) -> Resource:
    """A resource that the parent does not cover: a wider range or a new action."""
    how = draw(st.sampled_from(["below", "above", "action"]))
    if how == "below" and parent.first > NS_MIN:
        first = draw(st.integers(min_value=NS_MIN, max_value=parent.first - 1))
        return Resource(parent.owner, first, parent.last, parent.actions)
    if how == "above" and parent.last < NS_MAX:
        last = draw(st.integers(min_value=parent.last + 1, max_value=NS_MAX))
        return Resource(parent.owner, parent.first, last, parent.actions)
    extra = sorted(ACTIONS - parent.actions)
    assume(extra)
    return Resource(
        parent.owner, parent.first, parent.last, parent.actions | {draw(st.sampled_from(extra))}
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(narrowing_chains(), st.data())
def test_any_widening_is_refused(built: tuple[Chain, list[Resource]], data: st.DataObject) -> None:
    chain, resources = built
    assume(len(chain) < 8)
    leaf = resources[-1]
    assume(DELEGATE in leaf.actions)
    wider = data.draw(_wider(leaf))
    holder = KEYS[len(chain) - 1]
    extended_exp = data.draw(st.booleans())
    link = raw_link(
        holder,
        KEYS[len(chain)].ed25519_public,
        [wider if not extended_exp else leaf],
        exp=chain.expires_ms + (1 if extended_exp else 0),
        proof=chain.links[-1].digest,
    )
    hostile = chain_bytes(*(each.encoded for each in chain.links), link)
    try:
        verify_chain(hostile, now_ms=NOW)
    except E.AttenuationError:
        pass
    else:
        raise AssertionError("a widening chain verified")
    assert digest_of(link) != chain.links[-1].digest
