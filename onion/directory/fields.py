"""Fields shared by the directory's documents: format version, times, hosts, keys.

Design note
-----------
Descriptors, consensus entries and the network file describe the same things (a 32-byte
key, a host, a port, a version string, a time in ms) and must refuse the same bad
values, each with its own error class: the checks take that class as a parameter, and
the schema fields are declared once here.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from .. import crypto
from ..cbor import Field

FORMAT_VERSION: Final = 1
#: Clock difference tolerated on "not yet valid" checks (DESIGN: about a minute).
CLOCK_SKEW_MS: Final = 60_000
MAX_VERSION_LEN: Final = 64
#: The longest IP literal ("ffff:...:255.255.255.255"); the canonical forms accepted are
#: at most 39 characters, and longer spellings are refused by name, not by length.
MAX_HOST_LEN: Final = 45
MAX_TIME_MS: Final = 2**63 - 1
KEY_FIELD: Final = Field(bytes, size=32)
SIG_FIELD: Final = Field(bytes, size=crypto.SIG_BYTES)
TIME_FIELD: Final = Field(int, min=0, max=MAX_TIME_MS)
HOST_FIELD: Final = Field(str, min_len=1, max_len=MAX_HOST_LEN)
PORT_FIELD: Final = Field(int, min=1, max=65535)
VERSION_FIELD: Final = Field(str, min_len=1, max_len=MAX_VERSION_LEN)
FORMAT_FIELD: Final = Field(int, choices=frozenset({FORMAT_VERSION}))


def check_host(host: object, error: type[Exception]) -> str:
    """``host`` must be an IP literal in its canonical text form (one spelling per address)."""
    if not isinstance(host, str) or not 0 < len(host) <= MAX_HOST_LEN:
        raise error(f"host must be an IP literal of at most {MAX_HOST_LEN} characters")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise error(f"host {host!r} is not an IP address literal") from None
    if isinstance(ip, ipaddress.IPv6Address) and (ip.scope_id or ip.ipv4_mapped):
        # A zone ID means nothing off this machine; an IPv4-mapped address is written
        # as IPv4 (and its text form differs between Python versions).
        raise error(f"host {host!r}: write IPv4 addresses as IPv4, without a zone ID")
    if str(ip) != host:
        raise error(f"host {host!r} is not in canonical form (write it {ip})")
    if ip.is_unspecified or ip.is_multicast:
        raise error(f"host {host!r} is not a unicast address a node can be reached at")
    return host


def check_port(port: object, error: type[Exception]) -> int:
    if type(port) is not int or not 1 <= port <= 65535:
        raise error(f"port must be an integer in 1..65535, not {port!r}")
    return port


def check_version(version: object, error: type[Exception]) -> str:
    if (
        not isinstance(version, str)
        or not 0 < len(version) <= MAX_VERSION_LEN
        or not (version.isascii() and version.isprintable())
    ):
        raise error(f"version must be 1 to {MAX_VERSION_LEN} printable ASCII characters")
    return version


def check_key_bytes(value: object, what: str, error: type[Exception]) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise error(f"{what} must be 32 bytes")
    return value


def check_time(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TIME_MS:
        raise ValueError(f"{what} must be a time in ms since the epoch, not {value!r}")
    return value
