"""Known-answer vectors of encryption sessions (issue 13): tests/vectors/group_v1.json
pins the records, the wrapped keys, a message and a file header byte for byte, from
fixed seeds and a deterministic rng, and the documented constructions are rebuilt here
with another CBOR encoder (cbor2, canonical) and libsodium called directly.

Regenerate (only for a deliberate change of format): ``python -m tests.test_group_vectors``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import nacl.bindings as sodium

from tests.capabilityutil import counter_rng
from veil.onion.group import (
    FileDecryptor,
    FileEncryptor,
    SessionState,
    create_session,
    decrypt_message,
    encrypt_message,
)
from veil.onion.group.records import EpochRecord, GenesisRecord, MemberRecord
from veil.onion.keys import Account, GroupId

VECTORS = Path(__file__).parent / "vectors" / "group_v1.json"
NOW = 1_767_225_600_000
CREATOR_SEED = hashlib.blake2b(b"group vector/creator", digest_size=32).digest()
MEMBER_SEED = hashlib.blake2b(b"group vector/member", digest_size=32).digest()
FILE_DATA = b"veil group file vector\n" * 5


def make_vectors() -> dict[str, Any]:
    """The contents of tests/vectors/group_v1.json but the file's stream (random inside
    libsodium), which is stored once and checked by decrypting it."""
    creator, member = Account(CREATOR_SEED), Account(MEMBER_SEED)
    new = create_session(
        creator,
        {member.id: {"read"}},
        metadata="vector",
        policy="delegation",
        now_ms=NOW,
        rng=counter_rng(b"group-session"),
    )
    genesis, creator_record, member_record, epoch = new.records
    message = encrypt_message(
        new.session_id, new.epoch, new.epoch_key, "hello, group",
        author=creator, timestamp_ms=NOW + 1, rng=counter_rng(b"group-message"),
    )
    raw = encrypt_message(
        new.session_id, new.epoch, new.epoch_key, b"raw", raw=True,
        rng=counter_rng(b"group-raw"),
    )
    enc = FileEncryptor(new.session_id, new.epoch, new.epoch_key, "vector.txt",
                        len(FILE_DATA), rng=counter_rng(b"group-file"))
    return {
        "description": (
            "veil encryption sessions v1 (onion/group). Seeds are Ed25519 seeds; the rng "
            "is BLAKE2b-512(key=rng_seed, data=u64be(0)) || ... Records are canonical "
            "CBOR maps signed under 'veil/group-genesis/v1' NUL, 'veil/group-member/v1' "
            "NUL, 'veil/group-epoch/v1' NUL; member links are capability/v1 links. "
            "Digests: BLAKE2b-256 person 'veil/grp-record'."
        ),
        "now_ms": NOW,
        "creator_seed": CREATOR_SEED.hex(),
        "member_seed": MEMBER_SEED.hex(),
        "session_rng_seed": b"group-session".hex(),
        "session_id": str(new.session_id),
        "session_seed": new.session_key.seed.hex(),
        "genesis": genesis.encoded.hex(),
        "creator_record": creator_record.encoded.hex(),
        "member_record": member_record.encoded.hex(),
        "epoch_record": epoch.encoded.hex(),
        "epoch_id": new.epoch.hex(),
        "epoch_key": new.epoch_key.hex(),
        "message_rng_seed": b"group-message".hex(),
        "message": message,
        "raw_rng_seed": b"group-raw".hex(),
        "raw_message": raw,
        "file_rng_seed": b"group-file".hex(),
        "file_prefix": enc.update(b"")[:-24].hex(),
    }


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def test_known_answer_vectors_byte_for_byte() -> None:
    stored = _vectors()
    assert make_vectors() == {k: v for k, v in stored.items() if k != "file"}


def test_the_stored_file_decrypts() -> None:
    v = _vectors()
    blob = bytes.fromhex(v["file"])
    assert blob.startswith(bytes.fromhex(v["file_prefix"]))
    dec = FileDecryptor({bytes.fromhex(v["epoch_id"]): bytes.fromhex(v["epoch_key"])},
                        session=GroupId.parse(v["session_id"]))
    assert dec.update(blob) + dec.finish() == FILE_DATA
    assert dec.header is not None and dec.header.filename == "vector.txt"


def _kdf(key: bytes, person: bytes, size: int, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=size, key=key, person=person).digest()


def test_vectors_follow_the_documented_construction() -> None:
    v = _vectors()
    creator, member = Account(CREATOR_SEED), Account(MEMBER_SEED)
    sid = bytes.fromhex(v["session_id"][2:])
    # The genesis, rebuilt with cbor2 and signed by libsodium directly.
    session_sk = sodium.crypto_sign_seed_keypair(bytes.fromhex(v["session_seed"]))[1]
    body = {"k": "genesis", "v": 1, "sid": sid, "creator": creator.x25519_public,
            "policy": "delegation", "meta": "vector", "iat": v["now_ms"]}
    sig = sodium.crypto_sign(
        b"veil/group-genesis/v1\x00" + cbor2.dumps(body, canonical=True), session_sk
    )[:64]
    assert cbor2.dumps({**body, "sig": sig}, canonical=True).hex() == v["genesis"]
    # The epoch's key, unwrapped for the member by hand.
    epoch = cbor2.loads(bytes.fromhex(v["epoch_record"]))
    assert epoch["iss"] == sid and epoch["parents"] == []
    (wrap,) = [w["key"] for w in epoch["wraps"] if w["to"] == member.x25519_public]
    eph, sealed = wrap[:32], wrap[32:]
    shared = sodium.crypto_scalarmult(member.x25519_secret, eph)
    okm = _kdf(shared, b"veil/grp-wrap", 56, eph + member.x25519_public + sid + epoch["salt"])
    key = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        sealed, b"veil/group-wrap/v1\x00" + sid + epoch["salt"] + member.x25519_public,
        okm[32:], okm[:32],
    )
    assert key.hex() == v["epoch_key"]
    assert epoch["commit"] == _kdf(key, b"veil/grp-commit", 32, sid + epoch["salt"])
    epoch_id = hashlib.blake2b(bytes.fromhex(v["epoch_record"]), digest_size=32,
                               person=b"veil/grp-record").digest()
    assert epoch_id.hex() == v["epoch_id"]
    # The message, opened by hand.
    obj = json.loads(v["message"])
    assert obj["sessionId"] == v["session_id"]
    data = base64.b64decode(obj["data"])
    assert data[0] == 1 and data[1:33] == epoch_id
    nonce = data[33:57]
    assert nonce == counter_rng(b"group-message")(24)
    msg_key = _kdf(key, b"veil/grp-msgkey", 32, sid + epoch_id)
    padded = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        data[57:], b"veil/group-msg/v1\x00" + sid + data[:33], nonce, msg_key
    )
    inner = cbor2.loads(padded.rstrip(b"\x00")[:-1])
    assert inner["body"] == b"hello, group" and inner["from"] == creator.ed25519_public
    signed = sid + epoch_id + inner["from"] + inner["ts"].to_bytes(8, "big") + inner["body"]
    sodium.crypto_sign_open(inner["sig"] + b"veil/group-msg/v1\x00" + signed,
                            creator.ed25519_public)
    # The member's link names its account as audience: 0x05 + its X25519 key.
    member_record = cbor2.loads(bytes.fromhex(v["member_record"]))
    (link,) = cbor2.loads(member_record["chain"])
    assert cbor2.loads(link)["aud"] == b"\x05" + member.x25519_public
    # And through the library: the member reads both messages.
    records = [bytes.fromhex(v[name]) for name in
               ("genesis", "creator_record", "member_record", "epoch_record")]
    state = SessionState(GroupId(sid), records)
    assert isinstance(state.genesis, GenesisRecord) and not state.rejected
    assert all(isinstance(state.records[hashlib.blake2b(r, digest_size=32,
               person=b"veil/grp-record").digest()], GenesisRecord | MemberRecord | EpochRecord)
               for r in records)
    keys = state.epoch_keys(member)
    out = decrypt_message(v["message"], state, keys, now_ms=v["now_ms"] + 10)
    assert out.text == "hello, group" and out.author_id == creator.id
    assert decrypt_message(v["raw_message"], state, keys, now_ms=v["now_ms"]).body == b"raw"
    # The file header: magic, version, length, canonical CBOR.
    prefix = bytes.fromhex(v["file_prefix"])
    assert prefix[:7] == b"VEILGF\x01"
    header = cbor2.loads(prefix[9:])
    assert int.from_bytes(prefix[7:9], "big") == len(prefix) - 9
    assert header == {"sid": sid, "epoch": epoch_id, "salt": counter_rng(b"group-file")(16),
                      "name": "vector.txt", "size": len(FILE_DATA), "chunk": 65536}
    assert cbor2.dumps(header, canonical=True) == prefix[9:]


if __name__ == "__main__":
    vectors = make_vectors()
    v = vectors
    enc = FileEncryptor(GroupId.parse(v["session_id"]), bytes.fromhex(v["epoch_id"]),
                        bytes.fromhex(v["epoch_key"]), "vector.txt", len(FILE_DATA),
                        rng=counter_rng(b"group-file"))
    vectors["file"] = (enc.update(FILE_DATA) + enc.finish()).hex()
    VECTORS.parent.mkdir(exist_ok=True)
    VECTORS.write_text(json.dumps(vectors, indent=2) + "\n")
    print(f"wrote {VECTORS}")
