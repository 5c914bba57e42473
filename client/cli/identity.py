"""``veil id new|show|restore|passphrase|delegate|delegations|revoke-delegate``: the
identity on this home, and the delegated sessions it issues.

Design note
-----------
The identity is one secret seed in the home (:class:`veil.client.home.Home`), shown to
the user once as its 24-word recovery phrase. The seed never comes from argv: ``restore``
reads the phrase from stdin (:meth:`Context.read_secret`), and a passphrase that seals it
comes from the environment or a no-echo prompt (:meth:`Context.read_passphrase`).
Replacing an identity needs ``--force``, checked before anything is asked for.

Delegated sessions (:mod:`veil.client.delegation`): ``delegate`` issues one (signed by
the seed, or under ``--delegated FILE`` re-delegated from that session) and prints its
serialized string, or writes it with mode 0600 (``-o FILE``): a secret, as the seed is;
no network is needed (the time is this machine's, corrected by the offset to the
network's clock last measured on this home). The issue is recorded in the home, so
``delegations`` lists it and ``revoke-delegate`` (which does need the network) finds it by
DID or hash.
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
    delegate = ids.command(
        "delegate",
        _id_delegate,
        help="issue a delegated session key and print (or write) its serialized session",
        description="Authorize a fresh session key to act for your account on the given "
        "resources until it expires, and print its serialized session (a secret: the key "
        "and its capability chain), or write it to FILE with mode 0600. A resource is "
        "OWNER:NAMESPACES:ACTIONS, e.g. self:0:retrieve,delete (read and delete the "
        "inbox), self:-1:post (publish in namespace -1), self:*:retrieve; OWNER 'self' is "
        "your account; NAMESPACES is N, A..B, a comma list, or *; ACTIONS is a comma list "
        "of retrieve, store, delete, expire, post, delegate, revoke, or *. Under "
        "--delegated FILE, re-delegates a part of that session instead.",
    )
    delegate.add_argument(
        "--resource",
        "-r",
        dest="resources",
        action="append",
        required=True,
        metavar="R",
        help="OWNER:NAMESPACES:ACTIONS (repeat for several)",
    )
    delegate.add_argument(
        "--expires",
        default=None,
        metavar="DURATION",
        help="lifetime: N, Ns, Nm, Nh, Nd or Nw (default 7d; at most 30d; under "
        "--delegated, the session's own expiry)",
    )
    delegate.add_argument("--statement", metavar="TEXT", help="a statement kept in the capability")
    delegate.add_argument(
        "-o", "--output", metavar="FILE", help="write the session to FILE (mode 0600)"
    )
    delegate.add_argument(
        "--force", action="store_true", help="replace FILE if it exists (with -o)"
    )
    ids.command(
        "delegations",
        _id_delegations,
        help="list the delegated sessions this home issued",
        description="List the delegated sessions issued from this home: DID, resources, "
        "expiry, and whether they are revoked (by this home) or expired.",
    )
    revoke = ids.command(
        "revoke-delegate",
        _id_revoke_delegate,
        help="revoke a delegated session before it expires",
        description="Revoke, at the nodes of your account's swarm, a delegated session this "
        "home issued: by its DID (every link issued to that key) or the hash of its "
        "capability (as `veil id delegations` shows; 8 or more hex digits). Everything "
        "re-delegated from it stops working too.",
    )
    revoke.add_argument("target", metavar="DID|HASH", help="the session's DID or hash")


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
    from veil.client.delegation.store import SessionStore

    # The persisted delegated sessions are sealed under the same passphrase: re-sealed.
    SessionStore(ctx.home, passphrase=ctx.passphrase).reseal(
        lambda: ctx.home.save_identity(
            account, overwrite=True, passphrase=new, kdf=KDF_PRESETS[ctx.args.kdf]
        ),
        new,
    )
    account_id = str(account.id)
    ctx.emit(
        {"account_id": account_id, "passphrase": new is not None},
        f"{'Sealed' if new is not None else 'Stored without a passphrase'}: "
        f"the seed of {account_id}",
    )


# --- delegated sessions ---------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(text: str) -> int:
    """Seconds of ``N``, ``Ns``, ``Nm``, ``Nh``, ``Nd`` or ``Nw``; :class:`CliError`."""
    value = text.strip().lower()
    unit = 1
    if value and value[-1] in _UNITS:
        unit, value = _UNITS[value[-1]], value[:-1]
    if not value.isdigit() or len(value) > 9 or int(value) == 0:
        raise CliError(
            f"--expires {text!r}: a positive whole number with an optional unit "
            "s, m, h, d or w (for example 7d, 12h, 3600)"
        )
    return int(value) * unit


def _local_network_ms(ctx: Context) -> int:
    """This machine's clock plus the offset to the network's last measured here."""
    import contextlib

    from veil.client.state import open_state
    from veil.onion.wallclock import wall_clock_ms

    now = wall_clock_ms()
    if ctx.home.state_path.exists():
        with contextlib.closing(open_state(ctx.home)) as state:
            now += state.get_clock_offset() or 0
    return now


def _session_doc(session: object, *, file: str | None) -> dict[str, object]:
    from veil.client.delegation.session import DelegatedSession

    assert isinstance(session, DelegatedSession)
    doc: dict[str, object] = {
        "did": session.did,
        "hash": session.link_hash,
        "account": str(session.account),
        "resources": list(session.authorizations),
        "expires_ms": session.expires_ms,
    }
    if file is None:
        doc["session"] = session.serialize()
    else:
        doc["file"] = file
    return doc


def _id_delegate(ctx: Context) -> None:
    import contextlib
    from pathlib import Path

    from veil.client.delegation.issued import record_issued
    from veil.client.delegation.session import DEFAULT_EXPIRES_IN_S, authorize
    from veil.client.files import write_atomically
    from veil.client.state import open_state

    out = Path(ctx.args.output).expanduser() if ctx.args.output else None
    if out is not None and out.exists() and not ctx.args.force:
        raise CliError(f"{out} exists; pass --force to replace it")
    expires = None if ctx.args.expires is None else parse_duration(ctx.args.expires)
    now = _local_network_ms(ctx)
    parent = ctx.delegated
    if parent is None:
        account = ctx.account()
        session = authorize(
            account,
            ctx.args.resources,
            DEFAULT_EXPIRES_IN_S if expires is None else expires,
            statement=ctx.args.statement,
            now_ms=now,
        )
    else:
        session = parent.delegate(
            ctx.args.resources, expires, statement=ctx.args.statement, now_ms=now
        )
    ctx.home.ensure()
    with contextlib.closing(open_state(ctx.home)) as state:
        record_issued(state, session)
    text = session.serialize()
    if out is None:
        ctx.emit(_session_doc(session, file=None), text)
        return
    try:
        write_atomically(out, (text + "\n").encode(), mode=0o600, overwrite=ctx.args.force)
    except FileExistsError:
        raise CliError(f"{out} exists; pass --force to replace it") from None
    ctx.emit(
        _session_doc(session, file=str(out)),
        f"wrote the session {session.did} to {out} (mode 0600), "
        f"expires {_when(session.expires_ms)}",
    )


def _when(ms: int) -> str:
    import datetime

    try:
        moment = datetime.datetime.fromtimestamp(ms / 1000).astimezone()
    except (OverflowError, OSError, ValueError):
        return "?"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _id_delegations(ctx: Context) -> None:
    from veil.client.delegation.issued import list_issued
    from veil.onion.wallclock import wall_clock_ms

    now = wall_clock_ms()
    issued = list_issued(ctx.home)
    if ctx.json:
        ctx.emit({"delegations": [d.to_json(now) for d in issued]})
        return
    if not issued:
        ctx.note("no delegated sessions issued from this home")
        return
    lines = []
    for d in issued:
        state = "revoked" if d.revoked else "expired" if d.expired(now) else "active"
        lines.append(f"{d.did}  {state}, expires {_when(d.expires_ms)}  hash {d.link_hash[:16]}")
        lines.extend(f"    {r}" for r in d.resources)
    ctx.emit({}, "\n".join(lines))


def _id_revoke_delegate(ctx: Context) -> None:
    import trio

    from veil.client.files import read_network_file
    from veil.client.veil_client import Revoked, open_client

    session = ctx.delegated
    # Before the network (and the passphrase): a target this home never issued.
    if ctx.home.state_path.exists():
        import contextlib

        from veil.client.delegation.issued import find
        from veil.client.state import open_state

        with contextlib.closing(open_state(ctx.home)) as state:
            find(state, ctx.args.target)
    else:
        raise CliError("this home has issued no delegated sessions (`veil id delegations`)")
    network = read_network_file(ctx.require_network())
    account = ctx.account() if session is None else None

    async def main() -> list[Revoked]:
        async with open_client(ctx.home, network, account=account, delegated=session) as client:
            return await client.revoke(ctx.args.target)

    done = trio.run(main)
    ctx.emit(
        {
            "revoked": [
                {"hash": r.link_hash, "did": r.did, "accepted": r.accepted, "members": r.members}
                for r in done
            ]
        },
        "\n".join(
            f"revoked {r.link_hash[:16]} ({r.did}): taken by {r.accepted} of {r.members} "
            "members of the swarm"
            for r in done
        ),
    )
