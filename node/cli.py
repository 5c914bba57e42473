"""``veil-node``: the operator's command.

Design note
-----------
One subcommand for now, as DESIGN.md names it::

    veil-node run --data-dir DIR --listen HOST:PORT [--config FILE]

``run`` starts a standalone node (a one-node network that holds every account), prints
one line ``listening on HOST:PORT`` to stdout once it accepts connections (with the real
port when ``--listen`` asked for port 0; ``DIR/node.json`` says the same, with the node
ID, onion key and pid), logs to stderr, and runs until SIGINT or SIGTERM, after which it
shuts down gracefully and exits 0.

Exit codes: 0 after a clean shutdown; 2 for a usage or configuration error (bad
arguments, unknown config key, unusable data dir or key file, another node on the same
data dir); 1 if the node cannot start (the port is taken, the store cannot be opened)
or fails while running. Every failure prints one line saying what went wrong.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sqlite3
import sys
from collections.abc import Sequence
from functools import partial

import trio

from onion import __version__

from .app import Node, parse_listen, run_node
from .config import ConfigError, load_config
from .keystore import KeystoreError
from .logging import configure_logging

__all__ = ["main"]

log = logging.getLogger("veil.node")

_LISTEN_ERRNOS = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veil-node", description="Run a veil service node.")
    parser.add_argument("--version", action="version", version=f"veil-node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run a service node",
        description="Run a service node until SIGINT or SIGTERM.",
    )
    run.add_argument("--data-dir", required=True, metavar="DIR", help="keys, store, node.json")
    run.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="IP address and port (0: any free)"
    )
    run.add_argument("--config", metavar="FILE", help="TOML config (see node/config.py)")
    return parser


def _announce(node: Node) -> None:
    print(f"listening on {node.address}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``veil-node`` and ``python -m node``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"veil-node: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    try:
        trio.run(partial(run_node, args.data_dir, host, port, config, on_ready=_announce))
    except BaseException as raised:  # unwrapped; anything unexpected is re-raised
        exc = _single(raised)
        if isinstance(exc, KeystoreError):
            print(f"veil-node: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):
            print(
                f"veil-node: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr
            )
            return 1
        if isinstance(exc, sqlite3.Error | RuntimeError):
            print(f"veil-node: cannot open the store: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise
    return 0


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested exception groups (trio wraps what nurseries raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    raise SystemExit(main())
