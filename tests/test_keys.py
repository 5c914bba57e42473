"""Identities: account IDs, recovery phrases, group and node IDs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.onion import crypto
from veil.onion.errors import BadSignature, InvalidId, InvalidKey, InvalidPhrase
from veil.onion.keys import (
    Account,
    AccountId,
    GroupId,
    NodeKeys,
    account_id_of_ed25519,
    is_valid_x25519_public,
    parse_node_id,
    phrase_to_seed,
    seed_to_phrase,
)

# RFC 8032, section 7.1, test 1: an external vector for the Ed25519 key of a seed.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
# veil's account ID of that seed: pins the Ed25519 -> X25519 map and the ID format.
RFC8032_ACCOUNT_ID = "05d85e07ec22b0ad881537c2f44d662d1a143cf830c57aca4305d85c7a90f6b62e"

# BIP-39's published English vectors (trezor/python-mnemonic vectors.json), 256-bit.
BIP39_VECTORS = [
    ("00" * 32, " ".join(["abandon"] * 23 + ["art"])),
    (
        "7f" * 32,
        "legal winner thank year wave sausage worth useful legal winner thank year wave "
        "sausage worth useful legal winner thank year wave sausage worth title",
    ),
    ("ff" * 32, " ".join(["zoo"] * 23 + ["vote"])),
    (
        "68a79eaca2324873eacc50cb9c6eca8cc68ea5d936f98787c60c7ebc74e6ce7c",
        "hamster diagram private dutch cause delay private meat slide toddler razor book "
        "happy fancy gospel tennis maple dilemma loan word shrug inflict delay length",
    ),
]


def test_account_from_rfc8032_seed() -> None:
    acct = Account(RFC8032_SEED)
    assert acct.ed25519_public == RFC8032_PUBLIC
    assert str(acct.id) == RFC8032_ACCOUNT_ID
    assert len(str(acct.id)) == 66
    assert account_id_of_ed25519(RFC8032_PUBLIC) == acct.id
    assert RFC8032_SEED.hex() not in repr(acct)


@pytest.mark.parametrize(("entropy", "phrase"), BIP39_VECTORS)
def test_bip39_vectors(entropy: str, phrase: str) -> None:
    assert seed_to_phrase(bytes.fromhex(entropy)) == phrase
    assert phrase_to_seed(phrase) == bytes.fromhex(entropy)


def test_phrase_round_trip_and_forgiving_whitespace_and_case() -> None:
    acct = Account.generate()
    words = acct.phrase.split()
    assert len(words) == 24
    messy = "  " + "\n".join(w.upper() for w in words) + "\t "
    assert Account.from_phrase(messy).id == acct.id


def test_phrase_errors_say_what_is_wrong() -> None:
    phrase = BIP39_VECTORS[3][1]
    words = phrase.split()
    with pytest.raises(InvalidPhrase, match="24 words"):
        phrase_to_seed(" ".join(words[:23]))
    with pytest.raises(InvalidPhrase, match="xyzzy"):
        phrase_to_seed(" ".join(["xyzzy", *words[1:]]))
    swapped = " ".join([words[1], words[0], *words[2:]])
    with pytest.raises(InvalidPhrase, match="checksum"):
        phrase_to_seed(swapped)
    with pytest.raises(InvalidPhrase):
        phrase_to_seed("")


def test_account_id_parse_round_trip_and_case() -> None:
    acct = Account.generate()
    text = str(acct.id)
    assert AccountId.parse(text) == acct.id
    assert AccountId.parse(text[:2] + text[2:].upper()) == acct.id


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "66 characters"),
        ("05" + "00" * 31, "66 characters"),
        ("06" + RFC8032_ACCOUNT_ID[2:], "start with"),
        ("03" + RFC8032_ACCOUNT_ID[2:], "start with"),
        ("05" + "zz" + RFC8032_ACCOUNT_ID[4:], "hexadecimal"),
        ("05" + "00" * 32, "valid"),  # u = 0: low order
        ("05" + "01" + "00" * 31, "valid"),  # u = 1: low order
        ("05" + "ff" * 32, "valid"),  # non-canonical
        (" " + RFC8032_ACCOUNT_ID[1:], "start with"),
    ],
)
def test_bad_account_ids_are_refused(text: str, why: str) -> None:
    with pytest.raises(InvalidId, match=why):
        AccountId.parse(text)


def test_non_text_id_is_refused() -> None:
    with pytest.raises(InvalidId):
        AccountId.parse(b"05" * 33)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_property_parse_only_raises_invalid_id(text: str) -> None:
    with contextlib.suppress(InvalidId):
        AccountId.parse(text)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_property_every_derived_key_is_valid(seed: bytes) -> None:
    acct = Account(seed)
    assert is_valid_x25519_public(acct.x25519_public)
    assert AccountId.parse(str(acct.id)) == acct.id


def test_random_u_coordinates_are_mostly_refused() -> None:
    # A random 32-byte string is a prime-order point with probability about 1/32.
    import os

    accepted = sum(is_valid_x25519_public(os.urandom(32)) for _ in range(400))
    assert accepted < 100


def test_group_id() -> None:
    pk = Account.generate().ed25519_public
    gid = GroupId(pk)
    assert str(gid).startswith("03") and len(str(gid)) == 66
    assert GroupId.parse(str(gid)) == gid
    with pytest.raises(InvalidId):
        GroupId.parse("05" + pk.hex())
    with pytest.raises(InvalidId):
        GroupId.parse("03" + "00" * 32)


def test_node_keys_and_ids() -> None:
    keys = NodeKeys.generate()
    assert parse_node_id(keys.node_id) == keys.identity_public
    assert crypto.x25519_public(keys.onion_secret) == keys.onion_public
    with pytest.raises(InvalidId):
        parse_node_id("00" * 32)
    with pytest.raises(InvalidId):
        parse_node_id("xyz")
    with pytest.raises(InvalidKey):
        NodeKeys(bytes(32), bytes(31))


def test_signatures_are_domain_separated() -> None:
    acct = Account.generate()
    sig = acct.sign(b"storage", b"message")
    crypto.verify(acct.ed25519_public, b"storage", b"message", sig)
    with pytest.raises(BadSignature):
        crypto.verify(acct.ed25519_public, b"envelope", b"message", sig)
    with pytest.raises(BadSignature):
        crypto.verify(acct.ed25519_public, b"storage", b"messagE", sig)
    with pytest.raises(BadSignature):
        crypto.verify(Account.generate().ed25519_public, b"storage", b"message", sig)
    with pytest.raises(BadSignature):
        crypto.verify(acct.ed25519_public, b"storage", b"message", sig[:-1])
    with pytest.raises(ValueError):
        acct.sign(b"bad\x00domain", b"m")
