"""``veil devnet up|status|down``: a local veil network of ``veil-node`` processes.

Design note
-----------
The process management is :mod:`veil.client.devnet`; this module is its command line::

    veil devnet up [--nodes N] [--swarm-size K] [--authorities A] [--threshold T]
                   [--interval-ms MS] [--dir DIR] [--fresh] [--detach]
    veil devnet status [--dir DIR]
    veil devnet down [--dir DIR] [--grace S]

``DIR`` defaults to ``HOME/devnet`` (``HOME`` is ``veil --home``). ``up`` writes
``DIR/network.json``, which every other ``veil`` command takes as ``--network``.

``up`` in the foreground runs until SIGINT (Ctrl-C), SIGTERM or SIGHUP, then stops every
process it started and exits 0 (130 if interrupted before the network was ready). Those
signals raise :class:`_Stop` from the handler, once: a second Ctrl-C while stopping is
ignored, so the shutdown (SIGTERM to every child, SIGKILL after the grace period) is
never cut half-way, leaving orphans. A child that exits on its own is reported on stderr
and the rest keep running; if all of them are gone, ``up`` exits 1. With ``--detach``
the processes (each in its own session) outlive the command, which returns once the
network is ready; ``veil devnet down`` stops them.

A failed start prints several lines (which process died, with the tail of its log), so
``up`` prints :class:`~veil.client.errors.DevnetError` messages whole instead of letting
the framework (:func:`veil.client.cli.framework.run`) squash them into one line.

Exit codes: 0 ok; 1 a devnet already runs in DIR, a process died or was not ready in
time, or (``status``) no devnet runs in DIR; 2 usage; 130 interrupted while starting.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from veil.client.cli.framework import EXIT_ERROR, EXIT_INTERRUPTED, PROG, Context, Registrar
from veil.client.errors import CliError, UsageError

if TYPE_CHECKING:
    from veil.client.devnet import Devnet, DevnetStatus, MemberStatus

__all__ = ["format_status", "register"]

_DEFAULT_NODES = 10
_DEFAULT_SWARM_SIZE = 5
_DEFAULT_AUTHORITIES = 1
_DEFAULT_INTERVAL_MS = 5000
# The shortest interval an authority accepts (veil.client.devnet.MIN_INTERVAL_MS; kept
# here too because importing veil.client.devnet would load httpx when the CLI starts).
_MIN_INTERVAL_MS = 500
_WATCH_PERIOD_S = 0.5


def register(reg: Registrar) -> None:
    devnet = reg.group(
        "devnet",
        help="run a local test network of veil-node processes",
        description="A devnet: directory authorities and service nodes on 127.0.0.1, each "
        "a veil-node process with its own data dir and log under DIR (default HOME/devnet). "
        "Clients use DIR/network.json as --network.",
    )
    up = devnet.command(
        "up",
        _up,
        help="start a devnet and wait until its consensus lists every node",
        description="Start the authorities, then the nodes, and wait until a verified "
        "consensus lists every node; print the network. In the foreground it runs until "
        "Ctrl-C (or SIGTERM) and then stops every process; with --detach it returns and "
        "`veil devnet down` stops it.",
    )
    up.add_argument(
        "--nodes", type=_count(1, 1000), default=_DEFAULT_NODES, metavar="N", help="default 10"
    )
    up.add_argument(
        "--swarm-size",
        type=_count(1, 64),
        default=_DEFAULT_SWARM_SIZE,
        metavar="K",
        help="swarm target size (default 5)",
    )
    up.add_argument(
        "--authorities",
        type=_count(1, 32),
        default=_DEFAULT_AUTHORITIES,
        metavar="A",
        help="directory authorities (default 1)",
    )
    up.add_argument(
        "--threshold",
        type=_count(1, 32),
        metavar="T",
        help="signatures a consensus needs (default: a majority of the authorities)",
    )
    up.add_argument(
        "--interval-ms",
        type=_count(_MIN_INTERVAL_MS, 3_600_000),
        default=_DEFAULT_INTERVAL_MS,
        metavar="MS",
        help="consensus interval (default 5000)",
    )
    _dir_option(up)
    up.add_argument(
        "--fresh",
        action="store_true",
        help="first remove the data dirs (keys, messages) of an earlier devnet in DIR",
    )
    up.add_argument(
        "--detach",
        action="store_true",
        help="return once the network is ready and leave it running",
    )
    status = devnet.command(
        "status",
        _status,
        help="show each process of the running devnet",
        description="Each authority and node: ID, address, pid, swarm in the current "
        "consensus, and whether it is alive (running and answering GET /info). Exit 1 if "
        "no devnet runs in DIR.",
    )
    _dir_option(status)
    down = devnet.command(
        "down",
        _down,
        help="stop the devnet running in DIR",
        description="Stop every process of the devnet (SIGTERM, then SIGKILL after the "
        "grace period) and remove DIR/devnet.json. Data dirs and logs are kept.",
    )
    _dir_option(down)
    down.add_argument(
        "--grace",
        dest="grace_s",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between SIGTERM and SIGKILL (default 10)",
    )


def _dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", metavar="DIR", help="the devnet's directory (default HOME/devnet)")


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _directory(ctx: Context) -> Path:
    given = ctx.args.dir
    return Path(given).expanduser() if given else ctx.home_dir / "devnet"


# --- up ------------------------------------------------------------------------------------


class _Stop(BaseException):
    """Raised by the signal handler: stop the devnet (a BaseException, so that no
    ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _stop_signals() -> Iterator[None]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP raise :class:`_Stop`, once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals cannot be handled here; the caller stops the devnet itself
        return
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if raised:
            return  # already stopping: let the shutdown finish
        raised = True
        raise _Stop(signum)

    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _up(ctx: Context) -> int | None:
    from veil.client.devnet import Devnet, DevnetError

    args = ctx.args
    if args.threshold is not None and args.threshold > args.authorities:
        raise UsageError(
            f"--threshold {args.threshold} is more than the {args.authorities} authorities"
        )
    directory = _directory(ctx)
    # "foreground" even with --detach while it starts: `veil devnet down` then asks this
    # process to stop, and it stops what it started.
    net = Devnet(directory, manager_kind="foreground", log=ctx.note)
    detached = False
    started = False
    with _stop_signals():
        try:
            try:
                status = net.up(
                    nodes=args.nodes,
                    swarm_size=args.swarm_size,
                    authorities=args.authorities,
                    threshold=args.threshold,
                    interval_ms=args.interval_ms,
                    fresh=args.fresh,
                )
            except DevnetError as exc:
                # Several lines (which process died, its log): print them whole.
                ctx.stderr.write(f"{PROG}: error: {exc}\n")
                ctx.stderr.flush()
                return EXIT_ERROR
            started = True
            ctx.emit(status.to_json(), format_status(status))
            if args.detach:
                net.detach()
                detached = True
                ctx.note(f"devnet detached; stop it with: veil devnet down --dir {net.dir}")
                return None
            ctx.note("devnet running; Ctrl-C to stop it")
            return _watch(ctx, net)
        except _Stop as stop:
            ctx.note(f"{stop}: stopping the devnet")
            return None if started else EXIT_INTERRUPTED
        finally:
            if not detached:
                report = net.down()
                if report.stopped:
                    killed = f" ({len(report.killed)} needed SIGKILL)" if report.killed else ""
                    ctx.note(f"stopped {len(report.stopped)} processes{killed}")


def _watch(ctx: Context, net: Devnet) -> int:
    """Report children that exit, until a signal raises :class:`_Stop` (or all are gone)."""
    while True:
        time.sleep(_WATCH_PERIOD_S)
        for member in net.exited():
            code = member.exit_code
            ctx.note(
                f"{member.name} (pid {member.pid}) exited with code {code}; "
                f"its log: {member.log_path}"
            )
        if not any(m.is_running() for m in net.members):
            ctx.note("every process of the devnet has exited")
            return EXIT_ERROR


# --- status and down -----------------------------------------------------------------------


def _status(ctx: Context) -> int | None:
    from veil.client.devnet import NoDevnet, devnet_status

    try:
        status = devnet_status(_directory(ctx))
    except NoDevnet as exc:
        raise CliError(str(exc)) from None
    ctx.emit(status.to_json(), format_status(status))
    return None


def _down(ctx: Context) -> int | None:
    from veil.client.devnet import NoDevnet, stop_devnet

    directory = _directory(ctx)
    try:
        report = stop_devnet(directory, grace_s=max(0.0, ctx.args.grace_s))
    except NoDevnet:
        ctx.emit({"stopped": [], "killed": []}, f"no devnet is running in {directory}")
        return None
    if report.stopped:
        killed = f"; {', '.join(report.killed)} needed SIGKILL" if report.killed else ""
        text = f"stopped {len(report.stopped)} processes{killed}"
    else:
        text = f"no process of the devnet in {directory} was running; its state file is removed"
    ctx.emit({"stopped": list(report.stopped), "killed": list(report.killed)}, text)
    return None


# --- the table -----------------------------------------------------------------------------


def format_status(status: DevnetStatus) -> str:
    """The human-readable view of a devnet: a summary line and one row per process."""
    rows = [("ROLE", "NAME", "ID", "ADDRESS", "PID", "SWARM", "ALIVE")]
    for m in (*status.authorities, *status.nodes):
        rows.append(_row(m))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    swarms = {m.swarm for m in status.nodes if m.swarm is not None}
    epoch = (
        f"consensus epoch {status.epoch}"
        if status.epoch is not None
        else f"no consensus ({status.consensus_error})"
    )
    head = (
        f"devnet in {status.dir}: {epoch}; {len(status.authorities)} "
        f"authorit{'y' if len(status.authorities) == 1 else 'ies'} (threshold "
        f"{status.threshold}), {len(status.nodes)} nodes in {len(swarms)} "
        f"swarm{'s' * (len(swarms) != 1)} (target size {status.swarm_size})"
    )
    foot = f"clients: veil --network {status.network_file} ..."
    return "\n".join([head, *lines, foot])


def _row(m: MemberStatus) -> tuple[str, str, str, str, str, str, str]:
    return (
        m.role,
        m.name,
        m.id[:12] or "-",
        m.address,
        str(m.pid) if m.pid is not None else "-",
        f"{m.swarm:016x}" if m.swarm is not None else "-",
        "yes" if m.alive else ("no (not answering)" if m.running else "no"),
    )
