"""The ``veil`` command's framework: parsing, the handler's context, output, exit codes.

Design notes
------------
* **One tree of subcommands, registered in pieces.** Each command group is a module of
  this package with a function ``register(reg: Registrar) -> None`` that adds its
  parsers and names a handler for each leaf; :mod:`veil.client.cli.app` lists the groups
  in help order. This module imports none of them (they import it), so there is no
  import circle: a new group (group, channel, bot, room) is a new module and one line
  in ``app``.
* **A handler is ``handler(ctx: Context) -> int | None``.** It reads its arguments from
  ``ctx.args``, writes results with :meth:`Context.emit` (JSON or text, chosen by
  ``--json``), notes for humans with :meth:`Context.note` (stderr), and fails by raising
  :class:`~veil.client.errors.CliError` (or :class:`~veil.client.errors.UsageError`, or
  any :class:`~veil.onion.errors.VeilError`). Returning ``None`` means success (exit 0).
* **One place turns failures into exit codes** (:func:`run`): a ``VeilError`` or an
  ``OSError`` becomes one line, ``veil: error: ...``, on stderr and exit 1; usage errors
  exit 2 (argparse's own, with its usage line, or ``UsageError``); Ctrl-C exits 130
  without a traceback. Anything else is a bug and keeps its traceback. ``VEIL_DEBUG=1``
  shows the traceback of user errors too.
* **Fast to start.** Only argparse, json and the error modules are imported at the top
  (here and in every group module); handlers import what they need (keys, trio, httpx,
  sqlite3) when they run, so ``veil --help`` and a mistyped command answer at once.
* **Secrets never come from argv** (it leaks into process lists and shell history):
  :meth:`Context.read_secret` reads them from stdin, with a no-echo prompt on a TTY.
* **Delegated sessions.** The global ``--delegated FILE`` (or ``VEIL_DELEGATED``) names a
  file holding a serialized delegated session (``veil id delegate -o FILE``): commands
  that talk to the network then act for the session's account without its seed
  (:meth:`Context.delegated`); the file is a secret, refused if others may read it.
* **Passphrases** (of a seed sealed with ``veil id new --passphrase``) come from the
  environment, ``VEIL_PASSPHRASE`` (and ``VEIL_NEW_PASSPHRASE`` when changing it), for
  services that run unattended; else from a no-echo prompt when stdin is a terminal
  (asked twice when setting one). Never from argv, and never from piped stdin, which
  carries a command's data (the recovery phrase of ``veil id restore``). A command that
  needs the seed asks for it through :meth:`Context.account`; ``veil id show`` does not.

Exit codes: 0 success, 1 error, 2 usage, 130 interrupted (Ctrl-C), 141 stdout closed
early (``veil ... | head``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from veil.client.errors import CliError
from veil.onion import __version__
from veil.onion.errors import VeilError

if TYPE_CHECKING:
    from veil.client.delegation.session import DelegatedSession
    from veil.client.home import Home
    from veil.onion.keys import Account

PROG = "veil"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

#: Environment variable naming a delegated session's file (``--delegated``).
DELEGATED_ENV = "VEIL_DELEGATED"
#: A serialized session is at most about 22 KB; a file much larger is not one.
MAX_SESSION_FILE_BYTES = 64 * 1024

#: Environment variables that carry passphrases for unattended use (see the module notes).
PASSPHRASE_ENV = "VEIL_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
NEW_PASSPHRASE_ENV = "VEIL_NEW_PASSPHRASE"  # noqa: S105
# How many times a terminal user may mistype the passphrase before the command fails.
_PASSPHRASE_TRIES = 3

# A secret read from stdin (a recovery phrase is about 200 characters) is refused past
# this, before it is parsed.
MAX_SECRET_CHARS = 4096

Handler = Callable[["Context"], "int | None"]
#: A command group: adds its commands (and their handlers) to the tree.
CommandGroup = Callable[["Registrar"], None]


# --- the context a handler runs in ---------------------------------------------------------


class Context:
    """What a handler gets: parsed arguments, global options, home, and output helpers."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        stdin: TextIO | None,
        stdout: TextIO,
        stderr: TextIO,
        env: dict[str, str] | os._Environ[str],
    ) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.env = env
        self._home_option: str | None = args.home or env.get("VEIL_HOME") or None
        network = args.network or env.get("VEIL_NETWORK") or None
        #: The network's bootstrap file (``--network``/``VEIL_NETWORK``), not yet read.
        self.network: Path | None = Path(network).expanduser() if network else None
        #: The passphrase that opened the seed in :meth:`account` (None: not sealed).
        self.passphrase: str | None = None
        delegated = getattr(args, "delegated", None) or env.get(DELEGATED_ENV) or None
        #: The delegated session's file (``--delegated``/``VEIL_DELEGATED``), not yet read.
        self.delegated_file: Path | None = Path(delegated).expanduser() if delegated else None

    @cached_property
    def delegated(self) -> DelegatedSession | None:
        """The session of ``--delegated FILE``, checked; None without the option.

        :class:`CliError` for a file that is missing, readable by others or too large;
        :class:`~veil.onion.errors.InvalidSession` for one that was altered."""
        path = self.delegated_file
        if path is None:
            return None
        import stat

        from veil.client.delegation.session import DelegatedSession
        from veil.client.errors import InsecureFile
        from veil.client.home import check_private

        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise CliError(f"--delegated {path} is not a regular file")
                try:
                    check_private(path, st)
                except InsecureFile as e:
                    raise CliError(f"--delegated: {e}") from None
                raw = f.read(MAX_SESSION_FILE_BYTES + 1)
        except FileNotFoundError:
            raise CliError(
                f"--delegated {path} does not exist (`veil id delegate -o FILE` writes one)"
            ) from None
        if len(raw) > MAX_SESSION_FILE_BYTES:
            raise CliError(f"--delegated {path} is too large to hold a session")
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise CliError(f"--delegated {path} does not hold a serialized session") from None
        return DelegatedSession.from_string(text)

    @cached_property
    def home_dir(self) -> Path:
        """``--home``, else ``VEIL_HOME``, else the platform's user data directory."""
        if self._home_option:
            return Path(self._home_option).expanduser()
        import platformdirs  # only when needed: it costs startup time

        return Path(platformdirs.user_data_dir("veil", appauthor=False))

    @cached_property
    def home(self) -> Home:
        """The client's home (not created on disk until something is saved)."""
        from veil.client.home import Home

        return Home(self.home_dir)

    def account(self) -> Account:
        """The stored identity; a :class:`CliError` telling how to make one if none.

        A seed sealed under a passphrase is opened with :meth:`read_passphrase`
        (``VEIL_PASSPHRASE`` or a prompt; on a terminal, three tries). A wrong
        passphrase raises :class:`~veil.client.errors.WrongPassphrase`.
        """
        from veil.client.errors import NoIdentity, PassphraseRequired, WrongPassphrase

        try:
            return self.home.load_identity()
        except NoIdentity as e:
            raise CliError(f"{e}; create one with `veil id new` or `veil id restore`") from None
        except PassphraseRequired:
            pass
        for attempt in range(1, _PASSPHRASE_TRIES + 1):
            passphrase = self.read_passphrase("passphrase of the seed")
            try:
                account = self.home.load_identity(passphrase)
                self.passphrase = passphrase  # it also opens the home's other secrets
                return account
            except WrongPassphrase:
                if self._passphrase_from_env(PASSPHRASE_ENV) or attempt == _PASSPHRASE_TRIES:
                    raise
                self.note("wrong passphrase, try again")
        raise AssertionError("unreachable")

    def _passphrase_from_env(self, env_var: str) -> str | None:
        return self.env.get(env_var) or None  # set but empty counts as unset

    def read_passphrase(
        self, what: str, *, env_var: str = PASSPHRASE_ENV, confirm: bool = False
    ) -> str:
        """A passphrase: from ``env_var`` if set, else a no-echo prompt on a terminal
        (asked twice if ``confirm``); never from argv or piped stdin.

        Raises :class:`CliError` if neither is available, or the two entries differ.
        """
        from_env = self._passphrase_from_env(env_var)
        if from_env is not None:
            return from_env
        if self.stdin is None or not self.stdin.isatty():
            raise CliError(
                f"the {what} is needed: run on a terminal to be asked for it, or set {env_var}"
            )
        import getpass

        label = f"{what[:1].upper()}{what[1:]}"
        try:
            first = getpass.getpass(f"{label} (not shown): ")
            if confirm and getpass.getpass(f"{label} again: ") != first:
                raise CliError("the two passphrases differ; nothing was changed")
        except EOFError:
            raise CliError(f"no {what} given") from None
        return first

    def require_network(self) -> Path:
        """The ``--network`` file, or a :class:`CliError` saying how to give one."""
        if self.network is None:
            raise CliError(
                "no network given: pass --network FILE or set VEIL_NETWORK "
                "(`veil devnet up` writes DIR/network.json)"
            )
        return self.network

    def emit(self, data: dict[str, Any], text: str | None = None) -> None:
        """Write a command's result to stdout: ``data`` as one JSON line under ``--json``,
        else ``text`` (or, if None, ``data``'s values one per line)."""
        if self.json:
            self.stdout.write(json.dumps(data) + "\n")
        elif text is not None:
            self.stdout.write(text if text.endswith("\n") else text + "\n")
        else:
            self.stdout.write("".join(f"{v}\n" for v in data.values()))
        self.stdout.flush()

    def note(self, message: str) -> None:
        """A remark for the human on stderr (kept off stdout, so ``--json`` stays clean)."""
        self.stderr.write(f"{PROG}: {message}\n")
        self.stderr.flush()

    def read_secret(self, what: str, *, limit: int = MAX_SECRET_CHARS) -> str:
        """Read a secret (for example a recovery phrase) from stdin, never from argv.

        On a TTY: a prompt naming ``what``, without echo. Otherwise all of stdin, up to
        ``limit`` bytes (more is refused before it is decoded or parsed). Empty input
        gives "".
        """
        stream = self.stdin
        if stream is None:
            raise CliError(f"no standard input to read the {what} from")
        if stream.isatty():
            import getpass

            try:
                return getpass.getpass(f"{what[:1].upper()}{what[1:]} (not shown): ")
            except EOFError:
                return ""
        raw = getattr(stream, "buffer", None)  # bytes, so bad UTF-8 is our error to name
        data = raw.read(limit + 1) if raw is not None else stream.read(limit + 1)
        if len(data) > limit:
            raise CliError(f"standard input is too long to be a {what}")
        if isinstance(data, str):
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError(f"standard input is not UTF-8 text: no {what} there") from None


# --- registering commands ------------------------------------------------------------------


class Registrar:
    """Adds commands at one level of the tree (``veil X`` or ``veil GROUP X``)."""

    def __init__(
        self, subparsers: argparse._SubParsersAction[Any], common: argparse.ArgumentParser
    ) -> None:
        self._subparsers = subparsers
        self._common = common

    def command(
        self, name: str, handler: Handler, *, help: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        """Add a leaf command run by ``handler``; add its arguments to the parser returned."""
        parser = self._subparsers.add_parser(
            name, help=help, description=description or help, parents=[self._common]
        )
        parser.set_defaults(handler=handler)
        return parser

    def group(self, name: str, *, help: str, description: str | None = None) -> Registrar:
        """Add a group of commands (``veil NAME ...``); register its commands on the result."""
        parser = self._subparsers.add_parser(
            name, help=help, description=description or help, parents=[self._common]
        )
        sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
        return Registrar(sub, self._common)


def _common_options() -> argparse.ArgumentParser:
    """Options every subcommand also takes after its name (``veil id show --json``).

    Their default is SUPPRESS so that, when given before the subcommand instead, the
    subcommand's parser does not overwrite the value with its own default.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output: one JSON object on stdout",
    )
    return common


def build_parser(groups: Sequence[CommandGroup]) -> argparse.ArgumentParser:
    """The whole ``veil`` parser: the global options, then each of ``groups`` in order."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="veil: anonymous, onion-routed messaging.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 130 interrupted.",
    )
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="the client's data directory (env VEIL_HOME; default: the user data dir)",
    )
    parser.add_argument(
        "--network",
        metavar="FILE",
        help="the network's bootstrap file (env VEIL_NETWORK), e.g. DIR/network.json",
    )
    parser.add_argument(
        "--delegated",
        metavar="FILE",
        help="act under the delegated session in FILE (`veil id delegate -o FILE`), "
        f"without the account's seed (env {DELEGATED_ENV})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False,
        help="machine-readable output: one JSON object on stdout",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = _common_options()
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    reg = Registrar(sub, common)
    for register in groups:
        register(reg)
    return parser


# --- the single error-handling point -------------------------------------------------------


def run(groups: Sequence[CommandGroup], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) against ``groups``, run the handler it
    names, and return the exit code (see the module notes)."""
    stderr = sys.stderr
    try:
        parser = build_parser(groups)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version, or a usage error (already printed)
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        ctx = Context(args, stdin=sys.stdin, stdout=sys.stdout, stderr=stderr, env=os.environ)
        result = args.handler(ctx)
        return EXIT_OK if result is None else int(result)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``veil ... | head``). Point stdout at /dev/null so the
        # interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (VeilError, OSError) as e:
        if os.environ.get("VEIL_DEBUG"):
            raise
        stderr.write(f"{PROG}: error: {_one_line(e)}\n")
        stderr.flush()
        return getattr(e, "exit_code", EXIT_ERROR)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        # "Permission denied: /x/y" reads better than "[Errno 13] Permission denied: ..."
        where = f": {e.filename}" if e.filename is not None else ""
        text = f"{e.strerror}{where}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())
