"""``veil id new|show|restore|passphrase``: the identity on this home.

Design note
-----------
The identity is one secret seed in the home (:class:`veil.client.home.Home`), shown to
the user once as its 24-word recovery phrase. The seed never comes from argv: ``restore``
reads the phrase from stdin (:meth:`Context.read_secret`), and a passphrase that seals it
comes from the environment or a no-echo prompt (:meth:`Context.read_passphrase`).
Replacing an identity needs ``--force``, checked before anything is asked for.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, NoReturn

from veil.client.cli.framework import NEW_PASSPHRASE_ENV, PASSPHRASE_ENV, Context, Registrar
from veil.client.errors import CliError

if TYPE_CHECKING:
    from veil.onion.keys import Account

__all__ = ["KDF_CHOICES", "register"]

#: ``--kdf`` choices: the names of veil.client.home.KDF_PRESETS (not imported here:
#: startup).
KDF_CHOICES = ("interactive", "moderate", "sensitive")


def register(reg: Registrar) -> None:
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
        from veil.client.errors import IdentityExists

        _explain_exists(IdentityExists(f"an identity already exists in {ctx.home.identity_path}"))


def _explain_exists(e: Exception) -> NoReturn:
    raise CliError(
        f"{e}; pass --force to replace it (the old account is lost unless you kept "
        "its recovery phrase)"
    ) from None


def _store(ctx: Context, account: Account, passphrase: str | None) -> None:
    from veil.client.errors import IdentityExists
    from veil.client.home import KDF_PRESETS

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
        from veil.client.errors import NoIdentity

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
