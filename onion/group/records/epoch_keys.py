"""An epoch's key: wrapped for each member, committed, and chained back to its parents.

Design note
-----------
An epoch's ID is its record's digest. Its 32-byte key ``K`` (random) is

* wrapped for each member as in :mod:`veil.onion.envelope`'s seal, written out so that
  a deterministic ``rng`` reaches the ephemeral key (libsodium's ``crypto_box_seal``
  draws it inside): ``eph`` random, ``k || n = BLAKE2b(key=X25519(eph, member),
  person="veil/grp-wrap", eph_pk || member_x25519 || sid || salt)`` (56 bytes),
  ``wrap = eph_pk || XChaCha20-Poly1305(k, n, K, ad="veil/group-wrap/v1" NUL || sid ||
  salt || member_x25519)``: a wrap opens only for its member, session and epoch;
* committed: ``commit = BLAKE2b(key=K, person="veil/grp-commit", sid || salt)``, signed
  with the record, so every member checks that it got the key everybody got (a
  rotator cannot give two members two keys);
* chained back: ``back = XChaCha20-Poly1305(BLAKE2b(key=K, person="veil/grp-back", sid
  || salt), nonce 0, the parents' keys in "parents" order)`` (a key used once, so the
  zero nonce is sound): the holder of a head's key holds every earlier key, as a new
  Seald recipient reads the whole session, and a member revoked before an epoch holds
  no key of it or after it. ``back`` is empty when the rotator did not hold its
  parents' keys (a creator that made the session with ``encrypt_for_self=False`` and
  rotates with the session key alone): the history before it then reaches only those
  who held it already, and members added later read from that epoch on.
"""

from __future__ import annotations

from ... import crypto
from ...crypto import Rng, system_rng
from ...errors import IntegrityError, InvalidKey
from ...keys import AccountId
from ..limits import BACK_PURPOSE, COMMIT_PURPOSE, KEY_BYTES, WRAP_AD, WRAP_BYTES, WRAP_PURPOSE
from .formats import EpochRecord

__all__ = ["epoch_commitment", "open_back", "unwrap_key", "wrap_key"]


def _wrap_key_nonce(
    shared: bytes, eph_pk: bytes, member_x: bytes, sid: bytes, salt: bytes
) -> tuple[bytes, bytes]:
    context = eph_pk + member_x + sid + salt
    okm = crypto.kdf(shared, WRAP_PURPOSE, KEY_BYTES + crypto.XNONCE_BYTES, context)
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


def _x25519_of_member(member: AccountId) -> bytes:
    if not isinstance(member, AccountId):
        raise InvalidKey("a member is named by its AccountId")
    return member.x25519_public


def wrap_key(
    key: bytes, member: AccountId, session: bytes, salt: bytes, *, rng: Rng = system_rng
) -> bytes:
    """``key`` sealed for the member's account (its X25519 key; module note)."""
    member_x = _x25519_of_member(member)
    eph_sk, eph_pk = crypto.x25519_keypair(rng)
    k, n = _wrap_key_nonce(crypto.x25519(eph_sk, member_x), eph_pk, member_x, session, salt)
    return eph_pk + crypto.aead_seal(k, n, key, WRAP_AD + session + salt + member_x)


def unwrap_key(
    x25519_secret: bytes, x25519_public: bytes, wrapped: bytes, session: bytes, salt: bytes
) -> bytes:
    """The key of a wrap sealed for this X25519 key pair; :class:`IntegrityError` if it
    does not open (not ours, altered, of another session or epoch)."""
    if len(wrapped) != WRAP_BYTES:
        raise IntegrityError("a wrap has the wrong length")
    eph_pk = wrapped[:32]
    shared = crypto.x25519(x25519_secret, eph_pk)
    k, n = _wrap_key_nonce(shared, eph_pk, x25519_public, session, salt)
    return crypto.aead_open(k, n, wrapped[32:], WRAP_AD + session + salt + x25519_public)


def epoch_commitment(key: bytes, session: bytes, salt: bytes) -> bytes:
    return crypto.kdf(key, COMMIT_PURPOSE, 32, session + salt)


def _back_key(key: bytes, session: bytes, salt: bytes) -> bytes:
    return crypto.kdf(key, BACK_PURPOSE, 32, session + salt)


def open_back(epoch: EpochRecord, key: bytes) -> dict[bytes, bytes]:
    """The parents' keys of ``epoch``, from its key (none if it carries none);
    :class:`IntegrityError` if the chain back does not open."""
    if not epoch.back:
        return {}
    plain = crypto.aead_open(
        _back_key(key, epoch.session, epoch.salt), bytes(crypto.XNONCE_BYTES), epoch.back
    )
    return {
        parent: plain[i * KEY_BYTES : (i + 1) * KEY_BYTES] for i, parent in enumerate(epoch.parents)
    }
