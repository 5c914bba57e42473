"""Strict CBOR for everything that comes from the network, and schemas on top of it.

Design note
-----------
veil speaks CBOR (RFC 8949) on the wire: RPC requests and replies, envelopes, directory
documents, capabilities. Bytes from outside are hostile, so :func:`decode` accepts only
a small, boring subset and refuses the rest with :class:`~veil.onion.errors.DecodeError`:

* integers (major types 0 and 1, so -2**64 .. 2**64-1), byte strings, UTF-8 text,
  arrays, maps, ``false``, ``true`` and ``null``;
* definite lengths only: no indefinite strings, arrays or maps, no "break";
* no tags (so no bignums, dates, shared references...), no floats, no ``undefined``,
  no other simple values, no reserved additional-information values;
* map keys are integers or text, never twice in one map;
* at most ``max_depth`` (default 16) nested arrays and maps;
* exactly one item, with no trailing bytes.

Why a decoder of our own rather than cbor2 plus checks: cbor2 decodes tags into objects
(datetimes, bignums, shared references, sets) before any hook of ours runs, floats and
simple values would need a second walk over the result, and its C extension has had
memory-safety bugs on hostile input. Pre-validating the structure and then calling cbor2
would parse every request twice. The subset above is small enough that one single-pass,
depth-bounded recursive parser (:mod:`~veil.onion.cbor.decoding`) is easier to audit than
the combination, and fast enough: a ten-field request map decodes in about 10-15 µs
on this project's machines (cbor2's C decoder: 2-4 µs, without the checks).

One module per job, re-exported here: :mod:`~veil.onion.cbor.decoding` (the strict
decoder and its limits), :mod:`~veil.onion.cbor.encoding` (the deterministic encoder),
:mod:`~veil.onion.cbor.schema` (:class:`Field` and :class:`Schema`). ``decode(...,
canonical=True)`` additionally refuses anything that is not in exactly the encoder's
form, for documents whose signature is over their re-encoding.

Speed without a second code path to audit: the decoder handles the values of a map that
are integers or strings inline, the encoder dispatches on the exact type first and
caches the encodings of text keys, and :class:`Schema` lets a value of exactly its
field's type and within its bounds through without the full check (anything else takes
the full check, so every error is the same). tests/test_cbor_fast.py checks all three
against the plain code they replaced, on valid and hostile input.
"""

from __future__ import annotations

from .decoding import DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT, decode
from .encoding import encode
from .schema import Field, Schema

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "MAX_DEPTH_LIMIT",
    "Field",
    "Schema",
    "decode",
    "encode",
]
