"""The few primitives veil uses, as a thin layer over libsodium (through pynacl).

Nothing here is home-made: X25519, Ed25519, ChaCha20 and XChaCha20-Poly1305 are
libsodium's; BLAKE2b is hashlib's (RFC 7693, the same function as libsodium's
``crypto_generichash``, without pynacl's per-call wrapper cost, which is several times
the hash itself on the small inputs of a hop). The hot path of an onion hop calls the
cffi functions directly for the same reason; every call still goes to libsodium.

Conventions that make misuse hard:

* every key derivation names its purpose in BLAKE2b's ``person`` field
  (:func:`kdf`), so no two uses of a secret can collide;
* every signature is over ``b"veil/" + domain + b"\\x00" + message``
  (:func:`sign` / :func:`verify`), so a signature made for one purpose is never
  valid for another;
* secrets are compared with :func:`hmac.compare_digest` only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

import nacl.bindings as sodium
import nacl.exceptions
from nacl._sodium import ffi, lib

from .errors import BadSignature, IntegrityError, InvalidKey, InvalidValue

#: A source of random bytes: ``rng(n) -> n bytes``. Tests inject a deterministic one.
Rng = Callable[[int], bytes]

KEY_BYTES = 32
SIG_BYTES = 64
AEAD_TAG_BYTES = 16
XNONCE_BYTES = 24

system_rng: Rng = os.urandom


def ct_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two byte strings."""
    return hmac.compare_digest(a, b)


def kdf(secret: bytes, purpose: bytes, size: int = 32, context: bytes = b"") -> bytes:
    """Derive ``size`` (<= 64) bytes for ``purpose`` (<= 16 bytes) from ``secret``.

    BLAKE2b keyed with the secret, personalised with the purpose: a PRF, so outputs
    for different purposes or contexts are independent.
    """
    return hashlib.blake2b(context, digest_size=size, key=secret, person=purpose).digest()


def mac(key: bytes, data: bytes, size: int = 16) -> bytes:
    """Keyed BLAKE2b MAC."""
    return hashlib.blake2b(data, digest_size=size, key=key).digest()


def hash32(data: bytes, purpose: bytes = b"") -> bytes:
    return hashlib.blake2b(data, digest_size=32, person=purpose).digest()


# --- stream cipher ---------------------------------------------------------------------

_ZERO_NONCE12 = bytes(12)
# Output buffers are overwritten whole by libsodium: skip cffi's zero-fill.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)


def stream_xor(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """XOR ``data`` with the ChaCha20 keystream of a single-use ``key``.

    pynacl does not expose ``crypto_stream_chacha20``; the IETF ChaCha20-Poly1305
    encryption computes exactly ``data XOR ChaCha20(key, nonce=0, counter=1)`` before
    appending its tag, so the tag is dropped. Every key passed here is derived for one
    use only, so the fixed nonce is sound.
    """
    n = len(data)
    out = _alloc("unsigned char[]", n + AEAD_TAG_BYTES)
    lib.crypto_aead_chacha20poly1305_ietf_encrypt(
        out, ffi.NULL, ffi.from_buffer(data), n, ffi.NULL, 0, ffi.NULL, _ZERO_NONCE12, key
    )
    return ffi.buffer(out, n)[:]


def keystream(key: bytes, size: int) -> bytes:
    return stream_xor(key, bytes(size))


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """XOR of two equal-length byte strings."""
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


# --- AEAD --------------------------------------------------------------------------------


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes = b"") -> bytes:
    """XChaCha20-Poly1305: ciphertext with its 16-byte tag."""
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad or None, nonce, key)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes = b"") -> bytes:
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad or None, nonce, key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, TypeError) as exc:
        raise IntegrityError("authentication failed") from exc


# --- X25519 ----------------------------------------------------------------------------


def x25519(private: bytes, public: bytes) -> bytes:
    """Shared secret; raises :class:`IntegrityError` for a low-order public key."""
    out = ffi.new("unsigned char[]", 32)
    if lib.crypto_scalarmult(out, private, public) != 0:
        raise IntegrityError("low-order point")
    return ffi.buffer(out, 32)[:]


def x25519_public(private: bytes) -> bytes:
    return sodium.crypto_scalarmult_base(private)


def x25519_keypair(rng: Rng = system_rng) -> tuple[bytes, bytes]:
    """A fresh (private, public) pair, the private key taken from ``rng``."""
    sk = rng(32)
    return sk, x25519_public(sk)


# --- Ed25519 ---------------------------------------------------------------------------


def ed25519_keypair_from_seed(seed: bytes) -> tuple[bytes, bytes]:
    """(64-byte secret key, 32-byte public key) from a 32-byte seed."""
    if len(seed) != 32:
        raise InvalidKey("an Ed25519 seed is 32 bytes")
    pk, sk = sodium.crypto_sign_seed_keypair(seed)
    return sk, pk


def ed25519_to_x25519_private(ed_sk: bytes) -> bytes:
    return sodium.crypto_sign_ed25519_sk_to_curve25519(ed_sk)


def ed25519_to_x25519_public(ed_pk: bytes) -> bytes:
    try:
        return sodium.crypto_sign_ed25519_pk_to_curve25519(ed_pk)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError) as exc:
        raise InvalidKey("not a valid Ed25519 public key") from exc


def ed25519_is_valid_point(pk: bytes) -> bool:
    """A canonical encoding of a point of prime order (libsodium's check)."""
    return len(pk) == 32 and bool(sodium.crypto_core_ed25519_is_valid_point(pk))


def _signed_bytes(domain: bytes, message: bytes) -> bytes:
    if b"\x00" in domain:
        raise InvalidValue("a signature domain holds no NUL byte")
    return b"veil/" + domain + b"\x00" + message


def sign(ed_sk: bytes, domain: bytes, message: bytes) -> bytes:
    """Detached Ed25519 signature of ``message`` under ``domain``."""
    return sodium.crypto_sign(_signed_bytes(domain, message), ed_sk)[:SIG_BYTES]


def verify(ed_pk: bytes, domain: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`BadSignature` unless ``signature`` is valid for ``domain``/``message``."""
    if len(signature) != SIG_BYTES or len(ed_pk) != 32:
        raise BadSignature("malformed signature or key")
    try:
        sodium.crypto_sign_open(signature + _signed_bytes(domain, message), ed_pk)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
        raise BadSignature("signature does not verify") from exc
