"""veil's protocol, sans-IO: keys and IDs, onion packets, envelopes, strict CBOR, RPC schemas.

Installed and imported as ``veil.onion``. Larger jobs are sub-packages re-exporting
their names: :mod:`veil.onion.cbor`, :mod:`veil.onion.directory`, :mod:`veil.onion.rpc`.

Nothing in this package does I/O or imports trio, httpx or sqlite3: every function takes
bytes (and, where it needs them, the time and a source of randomness) and returns bytes
or events, so that it can be tested with bytes in and bytes out.
"""

__version__ = "0.1.0"
