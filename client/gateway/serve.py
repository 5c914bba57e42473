"""Serving the gateway: hypercorn's trio worker, in the bot's trio process.

:func:`serve_gateway` runs the bot (:meth:`Bot.run`: its commands, unfinished
broadcasts) and the HTTP API side by side in one nursery. The address is checked first
(:func:`check_listen`): loopback by default; a public address only with TLS settings
(``certfile`` and ``keyfile``) or ``allow_public`` (behind a TLS proxy, say).

Hypercorn's limits keep a bad or slow client from holding the gateway: headers at most
16 KiB (``h11_max_incomplete_size``), a body at most 64 KiB (the app's 413), idle
keep-alive connections closed after 5 s, a client that stops sending mid-request after
``read_timeout`` (30 s), and a bounded backlog.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

import trio

from veil.client.errors import InvalidArgument

__all__ = ["Listen", "check_listen", "parse_listen", "serve_gateway"]

log = logging.getLogger("veil.gateway")

DEFAULT_LISTEN = "127.0.0.1:8787"


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_listen(text: str) -> Listen:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise InvalidArgument(f"--listen takes HOST:PORT, not {text!r}")
    return Listen(host.strip("[]"), int(port))


def check_listen(
    listen: Listen, *, certfile: str | None, keyfile: str | None, allow_public: bool
) -> None:
    """Refuse a non-loopback address without TLS settings or an explicit ``allow_public``."""
    if bool(certfile) != bool(keyfile):
        raise InvalidArgument("TLS needs both a certificate and its key")
    if not listen.is_loopback() and not certfile and not allow_public:
        raise InvalidArgument(
            f"{listen.host} is not a loopback address: tokens and codes would cross the "
            "network in clear. Give --tls-cert and --tls-key, or --allow-public if a TLS "
            "proxy is in front"
        )


def hypercorn_config(
    listen: Listen, *, certfile: str | None = None, keyfile: str | None = None
) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [listen.bind]
    config.certfile = certfile
    config.keyfile = keyfile
    config.accesslog = None
    config.errorlog = logging.getLogger("veil.gateway.http")
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_timeout = 5
    config.read_timeout = 30
    config.graceful_timeout = 2
    config.backlog = 256
    config.include_server_header = False
    return config


async def serve_gateway(
    gateway: Any,
    app: Any,
    listen: Listen,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    run_bot: bool = True,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` (of ``gateway``) and, with ``run_bot``, run the bot, until cancelled.
    ``task_status.started`` gets the bound addresses."""
    from hypercorn.trio import serve

    config = hypercorn_config(listen, certfile=certfile, keyfile=keyfile)
    async with trio.open_nursery() as nursery:
        gateway.nursery = nursery
        if run_bot:
            nursery.start_soon(gateway.bot.run)
        binds = await nursery.start(_serve, serve, app, config)
        task_status.started(binds)


async def _serve(serve: Any, app: Any, config: Any, *, task_status: Any) -> None:
    await serve(app, config, task_status=task_status)
