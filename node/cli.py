"""``veil-node``: the operator's command.

Design note
-----------
The subcommands, as DESIGN.md names them::

    veil-node run --data-dir DIR --listen HOST:PORT [--config FILE]
    veil-node authority --data-dir DIR --listen HOST:PORT --network FILE [--config FILE]
    veil-node authority-init --data-dir DIR
    veil-node config [--authority]
    veil-node check --config FILE [--authority] [--listen HOST:PORT]

``run`` starts a node: standalone (a one-node network that holds every account) unless
the config's ``[network] file`` names a ``network.json``, in which case the node
publishes its descriptor to the authorities and follows their consensus
(:mod:`veil.node.directory_client`). It prints one line ``listening on HOST:PORT`` to stdout
once it accepts connections (with the real port when ``--listen`` asked for port 0;
``DIR/node.json`` says the same, with the node ID, onion key and pid), logs to stderr,
and runs until SIGINT or SIGTERM, after which it shuts down gracefully and exits 0.

``authority-init`` creates a directory authority's Ed25519 key in ``DIR`` if it is
missing (``DIR/authority_keys.json``, mode 0600; the directory 0700) and prints one line
of JSON, ``{"key": "<64 hex>"}``: the key to pin in ``network.json``.

``authority`` runs a directory authority (:mod:`veil.node.authority`). ``--network`` is the
network's ``network.json``, which must list this authority's key; its address there is
where peers and nodes reach it, so ``--listen`` takes a fixed port (not 0). It prints
``listening on HOST:PORT`` when ready, keeps ``DIR/authority.json`` (address, key, pid)
while it runs, and exits 0 after SIGINT or SIGTERM. Its config file uses the
``[authority]`` table (and ``[http]``, ``[peers]``, ``[rate_limit]``, ``[log]``).

A parent that starts ``veil-node`` (the devnet, the tests) may ask it to stop when the
parent dies: ``VEIL_NODE_PARENT_FD`` names an inherited descriptor, the read end of a
pipe whose write end only the parent holds. When the parent dies, however it dies, the
read sees end-of-file and the process stops as on SIGTERM; one byte read instead means
the parent let it go (a detached devnet). Why a pipe and not ``PR_SET_PDEATHSIG``: see
``veil.client.devnet.spawning``, which holds the other end.

``config`` prints the configuration file of a node (of an authority with
``--authority``): every key the command reads, at its default, each with a comment saying
what it sets (:mod:`veil.node.config_doc`), as TOML that ``check`` accepts. ``check``
reads ``FILE`` as ``run`` (or ``authority``) would, and the network file its ``[network]
file`` names, and starts nothing: it prints one line ending in ``OK`` and exits 0, or
prints what is wrong (``veil-node: FILE: table.key must be ...``) and exits 2. With
``--listen`` it also checks what ``run --listen`` would need of the file (a node
listening on ``0.0.0.0`` in a network must set ``[network] advertise``).

Exit codes: 0 after a clean shutdown; 2 for a usage or configuration error (bad
arguments, unknown config key, a bad network file, unusable data dir or key file,
another process on the same data dir); 1 if it cannot start (the port is taken, the
store cannot be opened) or fails while running. Every failure prints one line saying
what went wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from veil.onion import __version__
from veil.onion.errors import NetworkFileError
from veil.onion.hostport import BadHostPort, format_hostport, parse_hostport

from .app import Node, run_node
from .authority import DirectoryAuthority, init_authority, run_authority
from .config import ROLE_TABLES, NodeConfig, Role, load_config
from .config_doc import render
from .directory_client import advertised_address, load_network_file
from .errors import ConfigError, NodeError, StoreError
from .logging import configure_logging

__all__ = ["main", "tune_gc"]

log = logging.getLogger("veil.node")

#: The descriptor to watch for the parent's death (see the module note).
PARENT_FD_ENV = "VEIL_NODE_PARENT_FD"


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
    run.add_argument("--config", metavar="FILE", help="TOML config (see: veil-node config)")
    auth = sub.add_parser(
        "authority",
        help="run a directory authority",
        description="Run a directory authority until SIGINT or SIGTERM.",
    )
    auth.add_argument("--data-dir", required=True, metavar="DIR", help="key, state files")
    auth.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="IP address and fixed port"
    )
    auth.add_argument(
        "--network", required=True, metavar="FILE", help="network.json listing this authority"
    )
    auth.add_argument(
        "--config", metavar="FILE", help="TOML config (see: veil-node config --authority)"
    )
    init = sub.add_parser(
        "authority-init",
        help="create a directory authority's key and print it",
        description='Create the authority key in DIR if missing; print {"key": "<hex>"}.',
    )
    init.add_argument("--data-dir", required=True, metavar="DIR", help="the authority's dir")
    config = sub.add_parser(
        "config",
        help="print the config file: every key, its default and meaning",
        description="Print a complete, commented TOML config with every key at its default.",
    )
    config.add_argument("--authority", action="store_true", help="a directory authority's")
    check = sub.add_parser(
        "check",
        help="check a config file without starting",
        description="Read a config file as run (or authority) would; exit 0 if it is good, "
        "2 with what is wrong.",
    )
    check.add_argument("--config", required=True, metavar="FILE", help="the TOML file")
    check.add_argument("--authority", action="store_true", help="a directory authority's file")
    check.add_argument(
        "--listen", metavar="HOST:PORT", help="the address run --listen will be given"
    )
    return parser


def _announce(node: Node | DirectoryAuthority) -> None:
    print(f"listening on {node.address}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``veil-node`` and ``python -m veil.node``; returns the exit code."""
    _watch_parent()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "authority-init":
        return _authority_init(Path(args.data_dir))
    if args.command == "config":
        sys.stdout.write(render("authority" if args.authority else "node"))
        return 0
    role: Role = (
        "authority"
        if args.command == "authority" or (args.command == "check" and args.authority)
        else "node"
    )
    try:
        host, port = parse_listen(args.listen) if args.listen else ("", 0)
    except BadHostPort as exc:
        parser.error(str(exc))
    if role == "authority" and port == 0 and args.listen:
        parser.error("an authority listens on the fixed port that network.json gives it, not 0")
    try:
        config = load_config(args.config, role)
        if args.command == "check":
            print(_check(args.config, config, role, args.listen and (host, port)), flush=True)
            return 0
        network = load_network_file(args.network) if args.command == "authority" else None
    except (ConfigError, NetworkFileError) as exc:
        print(f"veil-node: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    if network is not None:
        main_task = partial(
            run_authority, args.data_dir, host, port, network, config, on_ready=_announce
        )
    else:
        main_task = partial(run_node, args.data_dir, host, port, config, on_ready=_announce)
    tune_gc()
    try:
        trio.run(main_task)
    except BaseException as raised:  # unwrapped; anything unexpected is re-raised
        error = _single(raised)
        # The store's errors first: a StoreError is a NodeError, but a store that cannot
        # be opened is a failure to start (1), not a usage or configuration error (2).
        if isinstance(error, sqlite3.Error | StoreError):
            print(f"veil-node: cannot open the store: {error}", file=sys.stderr)
            return 1
        if isinstance(error, NodeError | NetworkFileError):
            print(f"veil-node: {error}", file=sys.stderr)
            return 2
        if isinstance(error, OSError):
            print(
                f"veil-node: cannot listen on {args.listen}: {error.strerror or error}",
                file=sys.stderr,
            )
            return 1
        if isinstance(error, KeyboardInterrupt):
            return 130
        raise
    return 0


def _check(path: str, config: NodeConfig, role: Role, listen: tuple[str, int] | None) -> str:
    """``veil-node check``, after the file has been read: what ``run`` would still refuse
    before it starts (the network file, an address to advertise); the one line to print
    if nothing. Raises :class:`ConfigError` or :class:`NetworkFileError` as it would."""
    facts = [f"{'an authority' if role == 'authority' else 'a node'}'s config"]
    changed = _changed_keys(config, role)
    if not changed:
        facts.append("every key at its default")
    elif len(changed) <= 8:
        facts.append(f"set: {', '.join(changed)}")
    else:
        facts.append(f"{len(changed)} keys set")
    if role == "node" and config.network.file:
        try:
            network = load_network_file(config.network.file)
        except NetworkFileError as exc:
            raise NetworkFileError(f"{path}: network.file: {exc}") from None
        facts.append(
            f"network: {len(network.authorities)} authorities, threshold {network.threshold}"
        )
        if listen is not None:
            try:
                host, port = advertised_address(config.network, *listen)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            facts.append(f"advertises {format_hostport(host, port)}")
    elif role == "node":
        facts.append("standalone (no network.file)")
    return f"{path}: OK ({'; '.join(facts)})"


def _changed_keys(config: NodeConfig, role: Role) -> list[str]:
    """``table.key`` of every value of ``config`` that is not its default, in the
    order ``veil-node config`` prints them."""
    defaults = NodeConfig()
    changed = []
    for table in ROLE_TABLES[role]:
        ours, theirs = getattr(config, table), getattr(defaults, table)
        for key in dataclasses.fields(ours):
            if getattr(ours, key.name) != getattr(theirs, key.name):
                changed.append(f"{table}.{key.name}")
    return changed


def parse_listen(text: str) -> tuple[str, int]:
    """``--listen HOST:PORT`` (``[V6]:PORT`` for IPv6) to ``(host, port)``; port 0 picks
    one. The host must be an IP address: a node's address goes into onion packets, which
    carry IP literals only. :class:`BadHostPort` with a message naming ``--listen``."""
    try:
        return parse_hostport(text, min_port=0)
    except BadHostPort as exc:
        raise BadHostPort(f"--listen {exc}") from None


def tune_gc() -> None:
    """Fewer, later cyclic collections for a long-running server.

    A node allocates a few short-lived containers per packet, almost all freed by
    reference counting; the collector's default (a young-generation pass every 700
    allocations) walks the objects of every request in flight over and over. A pass
    every 100,000 allocations cost about 7 % less CPU per relayed packet in
    ``./scripts/bench node`` and bounds uncollected cyclic garbage to a few megabytes.
    ``gc.freeze`` moves what start-up made (modules, config, keys) out of the
    collector's sight for good.
    """
    gc.freeze()
    gc.set_threshold(100_000, 20, 20)


def _watch_parent() -> None:
    """If ``VEIL_NODE_PARENT_FD`` asks for it, stop (SIGTERM to ourselves, so a clean
    shutdown) once the parent is gone. A thread blocked in one read: nothing on the hot
    path, and it works before trio runs (then SIGTERM's default ends the process)."""
    text = os.environ.pop(PARENT_FD_ENV, None)  # popped: not for a process we start
    if text is None:
        return
    try:
        fd = int(text)
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        return  # no such descriptor: nothing to watch (the variable leaked to us)
    threading.Thread(target=_stop_with_parent, args=(fd,), name="parent-watch", daemon=True).start()


def _stop_with_parent(fd: int) -> None:
    try:
        released = os.read(fd, 1) != b""
    except OSError:
        released = True  # not a pipe we can read: do not guess that the parent is gone
    os.close(fd)
    if not released:
        os.kill(os.getpid(), signal.SIGTERM)


def _authority_init(data_dir: Path) -> int:
    try:
        keys = init_authority(data_dir)
    except NodeError as exc:
        print(f"veil-node: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"key": keys.node_id}), flush=True)
    return 0


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested exception groups (trio wraps what nurseries raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    raise SystemExit(main())
