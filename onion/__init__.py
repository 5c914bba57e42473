"""veil's protocol, sans-IO: keys and IDs, onion packets, envelopes, strict CBOR, RPC schemas.

Nothing in this package does I/O or imports trio, httpx or sqlite3: every function takes
bytes (and, where it needs them, the time and a source of randomness) and returns bytes
or events, so that it can be tested with bytes in and bytes out.
"""

__version__ = "0.1.0"
