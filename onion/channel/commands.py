"""The bot command grammar: ``/cmd args``, as Telegram's bots read them.

Design note
-----------
A message whose text starts with ``/`` is a command::

    command = "/" name [ "@" bot-name ] [ whitespace args ]
    name    = 1 to 32 of a-z 0-9 _        (case-folded: "/Start" is "start")

``args`` is the rest of the text, stripped, kept whole (a command splits it if it
wants: :attr:`Command.argv`). Text that does not start with ``/`` is not a command
(:func:`parse_command` returns None: the bot's catch-all handler takes it). A ``/``
followed by something that is not a name, or a message over
:data:`MAX_COMMAND_CHARS`, is :class:`~veil.onion.errors.InvalidCommand`: a bot answers
such input with its help, never with an exception. ``/start PARAM`` carries a deep
link's parameter (:mod:`veil.onion.channel.links`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ..errors import InvalidCommand

__all__ = ["MAX_ARGS_CHARS", "MAX_COMMAND_CHARS", "Command", "parse_command"]

#: The longest text a bot parses as a command (longer ones are refused unparsed).
MAX_COMMAND_CHARS: Final = 4096
MAX_ARGS_CHARS: Final = 4000
_HEAD: Final = re.compile(r"/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?(?:\s+|$)", re.ASCII)


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command: ``name`` (lower case, no slash) and ``args`` (stripped text)."""

    name: str
    args: str = ""

    @property
    def argv(self) -> list[str]:
        """The arguments split on whitespace."""
        return self.args.split()


def parse_command(text: str) -> Command | None:
    """The command in ``text``, None if it is not one; :class:`InvalidCommand` for a
    malformed one (see the module note)."""
    if not isinstance(text, str):
        raise InvalidCommand("a command is text")
    if len(text) > MAX_COMMAND_CHARS:
        raise InvalidCommand(f"a command is at most {MAX_COMMAND_CHARS} characters")
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    match = _HEAD.match(stripped)
    if match is None:
        raise InvalidCommand("a command is / and 1 to 32 of a-z 0-9 _")
    args = stripped[match.end() :].strip()
    if len(args) > MAX_ARGS_CHARS:
        raise InvalidCommand("a command's arguments are too long")
    return Command(match.group(1).lower(), args)
