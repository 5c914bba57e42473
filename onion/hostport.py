"""``HOST:PORT`` text for IP-literal addresses, both ways, in one place.

A node's address goes into onion packets, which carry IP literals only, so every
``HOST:PORT`` that veil reads (``--listen``, ``advertise``, an authority's address) has
an IP address for its host, and an IPv6 one is written in brackets (``[::1]:8080``, as
in URLs, RFC 3986). Pure functions, no name resolution.
"""

from __future__ import annotations

import ipaddress

from .errors import InvalidValue

__all__ = ["BadHostPort", "format_hostport", "parse_hostport"]


class BadHostPort(InvalidValue):
    """Text that is not ``HOST:PORT`` with an IP address and a port in range; the message
    says which part is wrong (callers put the option's name before it)."""


def format_hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hostport(text: str, *, min_port: int = 1) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``) to ``(host, port)``, the host normalized by
    :mod:`ipaddress` (``::0001`` becomes ``::1``). ``min_port=0`` admits port 0 (a
    listener that lets the kernel pick). :class:`BadHostPort` for anything else."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise BadHostPort(f"wants HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise BadHostPort(f"wants an IP address, got {host!r}") from None
    if not (port_text.isascii() and port_text.isdigit()) or not min_port <= int(port_text) <= 65535:
        raise BadHostPort(f"wants a port from {min_port} to 65535, got {port_text!r}")
    return str(ip), int(port_text)
