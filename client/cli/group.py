"""``veil group ...``: encryption sessions (issue 13) from the command line.

Design note
-----------
One command per operation of :mod:`veil.client.sessions`, each with ``--json``. A
session's state comes from its swarm; the commands keep sessions in the home's
persistent cache (sealed under a key of the account: :class:`HomeCacheStore`) for an
hour, so that decrypting several files or messages in a row asks the network once (and
again only for a message of an epoch it does not hold). What encrypts (``encrypt``,
``encrypt-file``, ``send``), ``group show`` and the commands that change a session
fetch it afresh: a cached state may predate a revocation. Files are streamed (constant
memory); on a terminal, files over :data:`PROGRESS_MIN_BYTES` show a progress bar
(``rich``) on stderr, never under ``--json``. A decrypted file is written next to
``-o OUT`` and renamed into place only once it has verified, so a tampered file leaves
nothing behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from veil.client.cli.framework import Context, Registrar
from veil.client.errors import CliError

if TYPE_CHECKING:
    from veil.client.sessions import EncryptionSession
    from veil.client.veil_client import VeilClient

__all__ = ["register"]

#: Files at least this large get a progress bar on a terminal.
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
#: How long the commands keep a session in the home's cache, seconds.
CLI_CACHE_TTL_S = 3600


def register(reg: Registrar) -> None:
    group = reg.group(
        "group",
        help="encryption sessions: shared keys for groups, files and chat",
        description="Encryption sessions (Seald-style): one key for many messages and "
        "files, with members and rights (read, forward, revoke). Revoking rotates the "
        "key, so a revoked member reads nothing encrypted afterwards.",
    )
    c = group.command("create", _create, help="create a session")
    c.add_argument("--member", action="append", default=[], metavar="ID", help="a member")
    c.add_argument("--metadata", metavar="TEXT", help="public metadata (not encrypted)")
    c.add_argument("--policy", choices=["rights", "delegation"], default="rights")
    c.add_argument("--rights", metavar="R,R", help="the members' rights (default read,forward)")
    c.add_argument("--no-self", action="store_true", help="do not encrypt for yourself")
    s = group.command("show", _show, help="show a session's members and rights")
    s.add_argument("group", metavar="GROUP")
    s = group.command("send", _send, help="send a message to the session's chat")
    s.add_argument("group", metavar="GROUP")
    s.add_argument("text", metavar="TEXT")
    s = group.command("inbox", _inbox, help="receive the session's chat messages")
    s.add_argument("group", metavar="GROUP")
    s.add_argument("--follow", action="store_true", help="keep printing new messages")
    s = group.command("add", _add, help="add members (right forward)")
    s.add_argument("group", metavar="GROUP")
    s.add_argument("members", metavar="ID", nargs="+")
    s.add_argument("--rights", metavar="R,R", help="their rights (default read,forward)")
    s = group.command("revoke", _revoke, help="revoke members (and rotate the key)")
    s.add_argument("group", metavar="GROUP")
    s.add_argument("members", metavar="ID", nargs="+")
    s.add_argument("--keep-added", action="store_true", help="re-add the members they had added")
    s = group.command("revoke-all", _revoke_all, help="revoke the whole session")
    s.add_argument("group", metavar="GROUP")
    s = group.command("encrypt-file", _encrypt_file, help="encrypt a file for the session")
    s.add_argument("group", metavar="GROUP")
    s.add_argument("path", metavar="PATH")
    s.add_argument("-o", "--output", required=True, metavar="OUT")
    s.add_argument("--name", metavar="NAME", help="the name in the header (default PATH's)")
    s = group.command("decrypt-file", _decrypt_file, help="decrypt a file (session from it)")
    s.add_argument("path", metavar="PATH")
    s.add_argument("-o", "--output", metavar="OUT", help="default: the name in its header")
    s = group.command("encrypt", _encrypt, help="encrypt a message string")
    s.add_argument("group", metavar="GROUP")
    s.add_argument("text", metavar="TEXT", help="the text, or - for standard input")
    s.add_argument("--raw", action="store_true", help="the base64 data alone")
    s = group.command("decrypt", _decrypt, help="decrypt a message string")
    s.add_argument("data", metavar="DATA", help="the message, or - for standard input")
    s.add_argument("--group", dest="session", metavar="GROUP", help="needed for raw data")


# --- helpers -------------------------------------------------------------------------------


def _run(ctx: Context, job: Any) -> Any:
    import trio

    from veil.client.files import read_network_file
    from veil.client.veil_client import ClientConfig, open_client

    if ctx.delegated_file is not None:
        raise CliError("encryption sessions need the account's seed: not under --delegated")
    network = read_network_file(ctx.require_network())
    account = ctx.account()
    config = ClientConfig(
        encryption_session_cache_ttl=CLI_CACHE_TTL_S,
        encryption_session_cache_cleanup_interval=-1,
        encryption_session_cache="home",
    )

    async def main() -> Any:
        async with open_client(ctx.home, network, account=account, config=config) as client:
            return await job(client)

    return trio.run(main)


def _ids(texts: list[str]) -> list[Any]:
    from veil.onion.errors import InvalidId
    from veil.onion.keys import AccountId

    out = []
    for text in texts:
        try:
            out.append(AccountId.parse(text))
        except InvalidId as e:
            raise CliError(f"not an account ID: {text[:80]!r} ({e})") from None
    return out


def _group_id(text: str) -> Any:
    from veil.onion.errors import InvalidId
    from veil.onion.keys import GroupId

    try:
        return GroupId.parse(text)
    except InvalidId as e:
        raise CliError(f"not a session ID: {text[:80]!r} ({e}; 03 and 64 hex digits)") from None


def _rights(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from veil.onion.errors import InvalidRights
    from veil.onion.group import check_rights

    rights = [r.strip() for r in text.split(",") if r.strip()]
    try:
        check_rights(rights)
    except InvalidRights as e:
        raise CliError(f"--rights: {e} (rights: read, forward, revoke)") from None
    return rights


def _text(ctx: Context, text: str) -> str:
    if text != "-":
        return text
    if ctx.stdin is None:
        raise CliError("no standard input to read from")
    return ctx.stdin.read(200_000).strip()


def _session_text(doc: dict[str, Any]) -> str:
    lines = [f"session   {doc['session_id']}"]
    if doc.get("metadata") is not None:
        lines.append(f"metadata  {doc['metadata']}")
    lines.append(f"policy    {doc['policy']}   creator {doc['creator']}")
    for i, (member, rights) in enumerate(doc["members"].items()):
        by = ", ".join(a[:12] for a in doc["added_by"].get(member, []))
        lines.append(
            f"{'members' if i == 0 else '':<10}{member}  {','.join(rights)}"
            + (f"  (added by {by})" if by else "")
        )
    if doc["revoked"]:
        lines.append(f"revoked   {', '.join(doc['revoked'])}")
    if doc["ended"]:
        lines.append("ended     the whole session was revoked")
    return "\n".join(lines)


def _progress(ctx: Context, size: int | None, what: str) -> Any:
    """A rich progress bar on a terminal for a large file; else None."""
    if ctx.json or size is None or size < PROGRESS_MIN_BYTES or not ctx.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn(what),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        console=Console(file=ctx.stderr),
    )


async def _with_progress(ctx: Context, size: int | None, what: str, run: Any) -> Any:
    bar = _progress(ctx, size, what)
    if bar is None:
        return await run(None)
    with bar:
        task = bar.add_task(what, total=size)
        return await run(lambda done, _total: bar.update(task, completed=done))


# --- the commands --------------------------------------------------------------------------


def _create(ctx: Context) -> None:
    members = _ids(ctx.args.member)
    rights = _rights(ctx.args.rights)

    async def job(client: VeilClient) -> EncryptionSession:
        return await client.create_encryption_session(
            members,
            metadata=ctx.args.metadata,
            policy=ctx.args.policy,
            encrypt_for_self=not ctx.args.no_self,
            rights=rights,
        )

    session = _run(ctx, job)
    doc = session.to_json()
    ctx.emit(doc, session.id)


def _show(ctx: Context) -> None:
    sid = _group_id(ctx.args.group)

    async def job(client: VeilClient) -> dict[str, Any]:
        session = await client.retrieve_encryption_session(sid, use_cache=False)
        doc = session.to_json()
        doc["my_rights"] = sorted(session.rights)
        return doc

    doc = _run(ctx, job)
    ctx.emit(doc, _session_text(doc))


def _send(ctx: Context) -> None:
    sid = _group_id(ctx.args.group)
    text = _text(ctx, ctx.args.text)
    if not text:
        raise CliError("empty message: nothing to send")

    async def job(client: VeilClient) -> str:
        from veil.onion.errors import GroupError

        session = await client.retrieve_encryption_session(sid)
        try:
            return await session.send(text)
        except GroupError:
            # A stale cached session (rotated since): fetch it and try once more.
            session = await client.retrieve_encryption_session(sid, use_cache=False)
            return await session.send(text)

    digest = _run(ctx, job)
    ctx.emit({"session_id": str(sid), "hash": digest}, f"sent (message {digest[:16]})")


def _inbox(ctx: Context) -> None:
    from veil.client.sessions.chat import GroupMessage

    sid = _group_id(ctx.args.group)

    def show(m: GroupMessage) -> None:
        when = "?"
        if m.timestamp_ms is not None:
            import datetime

            when = datetime.datetime.fromtimestamp(m.timestamp_ms / 1000).strftime(
                "%Y-%m-%d %H:%M:%S"
            )
        ctx.emit(m.to_json(), f"{when}  {m.author}\n  {m.text}")

    async def job(client: VeilClient) -> None:
        session = await client.retrieve_encryption_session(sid, use_cache=False)
        count = 0
        async for m in session.messages(follow=ctx.args.follow):
            show(m)
            count += 1
        if not count and not ctx.json:
            ctx.note("no new messages")

    _run(ctx, job)


def _add(ctx: Context) -> None:
    sid = _group_id(ctx.args.group)
    members = _ids(ctx.args.members)
    rights = _rights(ctx.args.rights)

    async def job(client: VeilClient) -> dict[str, Any]:
        session = await client.retrieve_encryption_session(sid, use_cache=False)
        await session.add_recipients(members, rights=rights)
        return session.to_json()

    doc = _run(ctx, job)
    ctx.emit(doc, f"added {len(members)} member(s) to {sid}")


def _revoke(ctx: Context) -> None:
    sid = _group_id(ctx.args.group)
    members = _ids(ctx.args.members)

    async def job(client: VeilClient) -> dict[str, Any]:
        session = await client.retrieve_encryption_session(sid, use_cache=False)
        await session.revoke_recipients(members, keep_added=ctx.args.keep_added)
        return session.to_json()

    doc = _run(ctx, job)
    ctx.emit(doc, f"revoked {len(members)} member(s); the key was rotated")


def _revoke_all(ctx: Context) -> None:
    sid = _group_id(ctx.args.group)

    async def job(client: VeilClient) -> None:
        session = await client.retrieve_encryption_session(sid, use_cache=False)
        await session.revoke()

    _run(ctx, job)
    ctx.emit({"session_id": str(sid), "ended": True}, f"session {sid} revoked")


def _encrypt_file(ctx: Context) -> None:
    import os

    sid = _group_id(ctx.args.group)
    path, out = ctx.args.path, ctx.args.output
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise CliError(f"{path}: {e.strerror}") from None

    async def job(client: VeilClient) -> int:
        session = await client.retrieve_encryption_session(sid)

        async def run(progress: Any) -> int:
            written = await session.encrypt_file(path, ctx.args.name, out=out, progress=progress)
            assert isinstance(written, int)
            return written

        return int(await _with_progress(ctx, size, "encrypting", run))

    written = _run(ctx, job)
    ctx.emit(
        {"session_id": str(sid), "input": path, "output": out, "size": size, "bytes": written},
        f"encrypted {size} bytes into {out}",
    )


def _decrypt_file(ctx: Context) -> None:
    import os
    from pathlib import Path

    path = ctx.args.path
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise CliError(f"{path}: {e.strerror}") from None

    async def job(client: VeilClient) -> Any:
        from veil.client.sessions.files import peek_header

        header, _, _ = await peek_header(path)
        out = ctx.args.output or str(Path(path).with_name(header.filename))
        if ctx.args.output is None and Path(out).exists():
            raise CliError(f"{out} exists: give -o OUT")

        async def run(progress: Any) -> Any:
            return await client.decrypt_file(path, out, progress=progress)

        return out, await _with_progress(ctx, size, "decrypting", run)

    out, result = _run(ctx, job)
    ctx.emit(
        {
            "session_id": str(result.session_id),
            "filename": result.filename,
            "size": result.size,
            "output": out,
        },
        f"decrypted {result.filename} ({result.size} bytes) into {out}",
    )


def _encrypt(ctx: Context) -> None:
    sid = _group_id(ctx.args.group)
    text = _text(ctx, ctx.args.text)

    async def job(client: VeilClient) -> str:
        # Fresh: a cached state may predate a revocation (encrypting under the old
        # epoch would give the revoked member this message).
        session = await client.retrieve_encryption_session(sid, use_cache=False)
        return session.encrypt_message(text, raw=ctx.args.raw)

    message = _run(ctx, job)
    ctx.emit({"session_id": str(sid), "message": message}, message)


def _decrypt(ctx: Context) -> None:
    data = _text(ctx, ctx.args.data)
    sid = _group_id(ctx.args.session) if ctx.args.session else None

    async def job(client: VeilClient) -> str:
        if sid is None:
            return await client.decrypt_message(data)
        from veil.onion.errors import GroupError

        session = await client.retrieve_encryption_session(sid)
        try:
            return session.decrypt_message(data)
        except GroupError:
            session = await client.retrieve_encryption_session(sid, use_cache=False)
            return session.decrypt_message(data)

    text = _run(ctx, job)
    ctx.emit({"text": text}, text)
