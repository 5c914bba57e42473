"""The network's bootstrap file (``network.json``): the authorities to trust.

Design note
-----------
A local file, but validated as strictly as anything from outside, every error a
:class:`~veil.onion.errors.NetworkFileError` (local: it carries no wire status) saying
what is wrong. Hosts are IP literals, so that no DNS lookup stands between a client and
its trust roots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from .. import crypto
from ..errors import InvalidId, NetworkFileError
from ..keys import parse_node_id
from .consensus import MAX_SIGNATURES
from .fields import FORMAT_VERSION, check_host, check_port

MAX_AUTHORITIES: Final = MAX_SIGNATURES
MAX_NETWORK_FILE_SIZE: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Authority:
    """A directory authority: its pinned Ed25519 key and where to fetch the consensus."""

    key: bytes
    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or not crypto.ed25519_is_valid_point(self.key):
            raise NetworkFileError("authority key is not a valid Ed25519 public key")
        check_host(self.host, NetworkFileError)
        check_port(self.port, NetworkFileError)

    @property
    def key_hex(self) -> str:
        return self.key.hex()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def label(self) -> str:
        """How logs and messages name it: its key's first 16 hex digits @ its address."""
        return f"{self.key_hex[:16]}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NetworkFile:
    """``network.json``: the authorities a client or node trusts, and how many must sign.

    A local file, but validated as strictly as anything from outside: the format below
    and nothing else, every error a :class:`NetworkFileError` saying what is wrong::

        {"version": 1, "threshold": 2,
         "authorities": [{"key": "<64 hex>", "host": "127.0.0.1", "port": 7000}, ...]}

    Hosts are IP literals (no DNS lookup stands between a client and its trust roots).
    """

    authorities: tuple[Authority, ...]
    threshold: int

    def __post_init__(self) -> None:
        authorities = tuple(self.authorities)
        object.__setattr__(self, "authorities", authorities)
        if not 1 <= len(authorities) <= MAX_AUTHORITIES:
            raise NetworkFileError(f"a network has 1 to {MAX_AUTHORITIES} authorities")
        for authority in authorities:
            if not isinstance(authority, Authority):
                raise NetworkFileError("authorities must be Authority entries")
        if len({a.key for a in authorities}) != len(authorities):
            raise NetworkFileError("an authority key is listed twice")
        if type(self.threshold) is not int or not 1 <= self.threshold <= len(authorities):
            raise NetworkFileError(
                f"threshold must be between 1 and the number of authorities "
                f"({len(authorities)}), not {self.threshold!r}"
            )

    @property
    def pinned_keys(self) -> tuple[bytes, ...]:
        return tuple(a.key for a in self.authorities)

    def to_json(self) -> str:
        """The file's text (deterministic: sorted keys, two-space indent, final newline)."""
        doc = {
            "version": FORMAT_VERSION,
            "threshold": self.threshold,
            "authorities": [
                {"key": a.key_hex, "host": a.host, "port": a.port} for a in self.authorities
            ],
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> NetworkFile:
        """Parse the file's text strictly; :class:`NetworkFileError` for anything wrong."""
        size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        if size > MAX_NETWORK_FILE_SIZE:
            raise NetworkFileError(
                f"network file of {size} bytes is over the limit of {MAX_NETWORK_FILE_SIZE}"
            )
        try:
            doc = json.loads(
                text,
                object_pairs_hook=_no_duplicate_keys,
                parse_float=_refuse_float,
                parse_constant=_refuse_float,
            )
        except NetworkFileError:
            raise
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, nesting
            raise NetworkFileError(f"network file is not valid JSON: {exc}") from None
        _expect_keys(doc, "network file", {"version", "threshold", "authorities"})
        if doc["version"] != FORMAT_VERSION or type(doc["version"]) is not int:
            raise NetworkFileError(f"network file version must be {FORMAT_VERSION}")
        entries = doc["authorities"]
        if not isinstance(entries, list):
            raise NetworkFileError("network file: authorities must be a list")
        if not 1 <= len(entries) <= MAX_AUTHORITIES:
            raise NetworkFileError(f"a network has 1 to {MAX_AUTHORITIES} authorities")
        authorities = []
        for index, entry in enumerate(entries):
            where = f"authorities[{index}]"
            _expect_keys(entry, where, {"key", "host", "port"})
            try:
                key = parse_node_id(entry["key"])
            except InvalidId:
                raise NetworkFileError(
                    f"{where}.key must be 64 hex characters of a valid Ed25519 key"
                ) from None
            try:
                authorities.append(Authority(key=key, host=entry["host"], port=entry["port"]))
            except NetworkFileError as exc:
                raise NetworkFileError(f"{where}: {exc}") from None
        return cls(authorities=tuple(authorities), threshold=doc["threshold"])


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise NetworkFileError(f"network file: key {key!r} appears twice in one object")
        result[key] = value
    return result


def _refuse_float(text: str) -> Any:
    raise NetworkFileError(f"network file: {text} is not allowed (integers only)")


def _expect_keys(obj: object, where: str, keys: set[str]) -> None:
    if not isinstance(obj, dict):
        raise NetworkFileError(f"{where} must be a JSON object")
    missing = keys - obj.keys()
    if missing:
        raise NetworkFileError(f"{where}: missing {', '.join(sorted(missing))}")
    unknown = obj.keys() - keys
    if unknown:
        raise NetworkFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
