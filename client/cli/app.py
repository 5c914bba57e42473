"""The ``veil`` command: its command groups, in help order, and :func:`main`.

Design note
-----------
The framework (:mod:`veil.client.cli.framework`) builds the parser from a list of
command groups and is the one place that turns failures into exit codes; each group is a
module of this package with a ``register(reg)`` function. This module is the only one
that knows them all: a new group (group, channel, bot, room) is a new module here and
one line in :data:`COMMAND_GROUPS`. Group modules import only argparse-level things at
the top (heavy imports wait inside the handlers), so importing them all costs nothing at
startup.
"""

from __future__ import annotations

from collections.abc import Sequence

import veil.client.cli.bot as bot
import veil.client.cli.channel as channel
import veil.client.cli.devnet as devnet
import veil.client.cli.group as group
import veil.client.cli.identity as identity
import veil.client.cli.messaging as messaging
import veil.client.cli.room as room
from veil.client.cli.framework import CommandGroup, run

__all__ = ["COMMAND_GROUPS", "main"]

#: Every command group, in help order.
COMMAND_GROUPS: tuple[CommandGroup, ...] = (
    identity.register,
    messaging.register,
    group.register,
    channel.register,
    room.register,
    bot.register,
    devnet.register,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``veil`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    return run(COMMAND_GROUPS, argv)
