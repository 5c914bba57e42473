"""The ``veil`` command: the users' and services' face of the client.

Design notes
------------
* **One tree of subcommands, registered in pieces.** Each command group is a function
  ``register(reg: Registrar) -> None`` that adds its parsers and names a handler for each
  leaf. :func:`_command_groups` lists them in help order; a new group lives in its own
  module (which imports only argparse-level things at the top) and is added there.
* **A handler is ``handler(ctx: Context) -> int | None``.** It reads its arguments from
  ``ctx.args``, writes results with :meth:`Context.emit` (JSON or text, chosen by
  ``--json``), notes for humans with :meth:`Context.note` (stderr), and fails by raising
  :class:`CliError` (or :class:`UsageError`, or any :class:`~onion.errors.VeilError`).
  Returning ``None`` means success (exit 0).
* **One place turns failures into exit codes** (:func:`main`): a ``VeilError`` or an
  ``OSError`` becomes one line, ``veil: error: ...``, on stderr and exit 1; usage errors
  exit 2 (argparse's own, with its usage line, or :class:`UsageError`); Ctrl-C exits 130
  without a traceback. Anything else is a bug and keeps its traceback. ``VEIL_DEBUG=1``
  shows the traceback of user errors too.
* **Fast to start.** Only argparse, json and onion.errors are imported at the top;
  handlers import what they need (keys, trio, httpx, sqlite3) when they run, so
  ``veil --help`` and a mistyped command answer at once.
* **Secrets never come from argv** (it leaks into process lists and shell history):
  :meth:`Context.read_secret` reads them from stdin, with a no-echo prompt on a TTY.
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
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from veil.onion import __version__
from veil.onion.errors import VeilError

if TYPE_CHECKING:
    from veil.client.home import Home
    from veil.onion.keys import Account

PROG = "veil"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

#: Environment variables that carry passphrases for unattended use (see the module notes).
PASSPHRASE_ENV = "VEIL_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
NEW_PASSPHRASE_ENV = "VEIL_NEW_PASSPHRASE"  # noqa: S105
#: ``--kdf`` choices: the names of client.home.KDF_PRESETS (not imported here: startup).
KDF_CHOICES = ("interactive", "moderate", "sensitive")
# How many times a terminal user may mistype the passphrase before the command fails.
_PASSPHRASE_TRIES = 3

# A secret read from stdin (a recovery phrase is about 200 characters) is refused past
# this, before it is parsed.
MAX_SECRET_CHARS = 4096

Handler = Callable[["Context"], "int | None"]


class CliError(VeilError):
    """A user error: printed as one line on stderr, exit 1."""

    status = "bad_request"
    exit_code = EXIT_ERROR


class UsageError(CliError):
    """The command line is wrong in a way argparse could not check: exit 2."""

    exit_code = EXIT_USAGE


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
        passphrase raises :class:`~client.home.WrongPassphrase`.
        """
        from veil.client.home import NoIdentity, PassphraseRequired, WrongPassphrase

        try:
            return self.home.load_identity()
        except NoIdentity as e:
            raise CliError(f"{e}; create one with `veil id new` or `veil id restore`") from None
        except PassphraseRequired:
            pass
        for attempt in range(1, _PASSPHRASE_TRIES + 1):
            passphrase = self.read_passphrase("passphrase of the seed")
            try:
                return self.home.load_identity(passphrase)
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


def build_parser() -> argparse.ArgumentParser:
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
        "--json",
        action="store_true",
        default=False,
        help="machine-readable output: one JSON object on stdout",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = _common_options()
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    reg = Registrar(sub, common)
    for register in _command_groups():
        register(reg)
    return parser


def _command_groups() -> list[Callable[[Registrar], None]]:
    """Every command group, in help order.

    To add one: write ``register(reg: Registrar) -> None`` in its own module (importing
    heavy things only inside handlers), import it here (here, not at the top of this
    module, so that it may import ``client.cli`` itself) and list it.
    """
    from veil.client.devnet_cli import register as register_devnet
    from veil.client.messaging_cli import register as register_messaging

    return [register_id, register_messaging, register_devnet]


# --- the single error-handling point -------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``veil`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    stderr = sys.stderr
    try:
        parser = build_parser()
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


# --- veil id ---------------------------------------------------------------------------------


def register_id(reg: Registrar) -> None:
    ids = reg.group(
        "id",
        help="create, show or restore your identity",
        description="Your identity is one secret seed, kept in the home directory; "
        "its recovery phrase (24 words) restores it anywhere. The seed may be sealed "
        "under a passphrase (--passphrase); commands that need it then ask for it, or "
        f"read it from {PASSPHRASE_ENV}.",
    )
    new = ids.command("new", _id_new, help="create a new identity")
    new.add_argument("--force", action="store_true", help="replace an existing identity")
    _passphrase_options(new)
    show = ids.command("show", _id_show, help="print your account ID")
    show.add_argument(
        "--phrase", action="store_true", help="also print the recovery phrase (a secret)"
    )
    restore = ids.command(
        "restore",
        _id_restore,
        help="restore an identity from its recovery phrase, read from stdin",
        description="Restore an identity from its 24-word recovery phrase, read from stdin "
        "(a prompt on a terminal; never from the command line, which others can see).",
    )
    restore.add_argument("--force", action="store_true", help="replace an existing identity")
    _passphrase_options(restore)
    passphrase = ids.command(
        "passphrase",
        _id_passphrase,
        help="set, change or remove the passphrase that seals your seed",
        description="Set, change (or with --remove, remove) the passphrase that seals "
        "the seed. The current one comes from a prompt or "
        f"{PASSPHRASE_ENV}, the new one from a prompt (twice) or {NEW_PASSPHRASE_ENV}.",
    )
    passphrase.add_argument(
        "--remove", action="store_true", help="store the seed without a passphrase"
    )
    _kdf_option(passphrase)


def _passphrase_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase",
        action="store_true",
        help="seal the seed under a passphrase: asked twice on a terminal, "
        f"else read from {PASSPHRASE_ENV} (never from the command line)",
    )
    _kdf_option(parser)


def _kdf_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kdf",
        choices=KDF_CHOICES,
        default="moderate",
        help="argon2id cost of the passphrase: 64 MiB, 256 MiB (default) or 1 GiB of memory",
    )


_PHRASE_WARNING = (
    "Write the recovery phrase down and keep it secret: it is the only way to restore\n"
    "this account, and anyone who has it can read your messages and speak as you."
)


def _new_passphrase(ctx: Context) -> str | None:
    """The passphrase to seal a new identity under, if ``--passphrase`` asks for one."""
    if not ctx.args.passphrase:
        if ctx.env.get(PASSPHRASE_ENV):
            ctx.note(f"{PASSPHRASE_ENV} is set but --passphrase is not given: no passphrase")
        return None
    return ctx.read_passphrase("new passphrase", confirm=True)


def _refuse_to_replace(ctx: Context) -> None:
    """Fail early (before asking for anything) if an identity would be replaced.

    Only a courtesy: :meth:`Home.save_identity` refuses atomically in any case.
    """
    if not ctx.args.force and ctx.home.has_identity():
        from veil.client.home import IdentityExists

        _explain_exists(IdentityExists(f"an identity already exists in {ctx.home.identity_path}"))


def _explain_exists(e: Exception) -> NoReturn:
    raise CliError(
        f"{e}; pass --force to replace it (the old account is lost unless you kept "
        "its recovery phrase)"
    ) from None


def _store(ctx: Context, account: Account, passphrase: str | None) -> None:
    from veil.client.home import KDF_PRESETS, IdentityExists

    replacing = ctx.args.force and ctx.home.has_identity()
    try:
        path = ctx.home.save_identity(
            account,
            overwrite=ctx.args.force,
            passphrase=passphrase,
            kdf=KDF_PRESETS[ctx.args.kdf],
        )
    except IdentityExists as e:
        _explain_exists(e)
    if replacing:
        ctx.note(f"replaced the identity in {path}")


def _id_new(ctx: Context) -> None:
    from veil.onion.keys import Account

    _refuse_to_replace(ctx)
    passphrase = _new_passphrase(ctx)
    account = Account.generate()  # the OS CSPRNG
    _store(ctx, account, passphrase)
    account_id, phrase = str(account.id), account.phrase
    ctx.emit(
        {"account_id": account_id, "phrase": phrase},
        f"Account ID: {account_id}\n\nRecovery phrase:\n\n  {phrase}\n\n{_PHRASE_WARNING}",
    )


def _id_show(ctx: Context) -> None:
    if not ctx.args.phrase:
        # The account ID is stored in clear: no passphrase needed.
        from veil.client.home import NoIdentity

        try:
            account_id = ctx.home.account_id()
        except NoIdentity as e:
            raise CliError(f"{e}; create one with `veil id new` or `veil id restore`") from None
        ctx.emit({"account_id": str(account_id)})
        return
    account = ctx.account()
    ctx.emit({"account_id": str(account.id), "phrase": account.phrase})


def _id_restore(ctx: Context) -> None:
    from veil.onion.keys import Account

    _refuse_to_replace(ctx)
    text = ctx.read_secret("recovery phrase")
    if not text.strip():
        raise CliError(
            "no recovery phrase on standard input (pipe it in, or run on a terminal "
            "to be asked for it)"
        )
    account = Account.from_phrase(text)  # InvalidPhrase says what is wrong
    _store(ctx, account, _new_passphrase(ctx))
    ctx.emit({"account_id": str(account.id)})


def _id_passphrase(ctx: Context) -> None:
    from veil.client.home import KDF_PRESETS

    account = ctx.account()  # asks for the current passphrase if there is one
    if ctx.args.remove:
        new = None
    else:
        new = ctx.read_passphrase("new passphrase", env_var=NEW_PASSPHRASE_ENV, confirm=True)
    ctx.home.save_identity(account, overwrite=True, passphrase=new, kdf=KDF_PRESETS[ctx.args.kdf])
    account_id = str(account.id)
    ctx.emit(
        {"account_id": account_id, "passphrase": new is not None},
        f"{'Sealed' if new is not None else 'Stored without a passphrase'}: "
        f"the seed of {account_id}",
    )
