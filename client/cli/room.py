"""``veil room create|info|post|read|delete|ban|unban|mod|list``: rooms from the command line.

Design notes
------------
* A room is named by the name this home gave it (its own rooms), its ID, or its link
  (``veil://room/<id>``). ``create`` prints the ID and the link.
* ``read ROOM`` prints what this home's reader has not printed yet (posts, and
  ``deleted POST_ID`` for a post printed earlier that moderators removed) and exits
  once it has caught up with the nodes; ``--follow`` keeps printing until Ctrl-C.
  ``--json``: one JSON object per line (``{"type": "post", ...}`` or
  ``{"type": "deleted", ...}``), flushed at once. Reading names no one: the reads are
  unsigned and the client runs with a throwaway key, as ``veil channel follow``.
* ``post``, ``delete``, ``ban`` and ``unban`` act as the home's account (or, with
  ``--delegated FILE``, as a session key whose capability holds ``self:-2:post``);
  ``mod add|remove`` and the rules need the room's own key, kept by the home that
  created it. A refusal (the room's rate, size, work, a ban, not a moderator) is one
  line naming the reason, exit 1.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from veil.client.cli.framework import Context, Registrar

if TYPE_CHECKING:
    from veil.client.rooms import Room
    from veil.client.veil_client import VeilClient

__all__ = ["register"]


def register(reg: Registrar) -> None:
    rooms = reg.group("room", help="open groups: anyone posts and reads, moderators moderate")
    create = rooms.command("create", _create, help="create a room (a new account)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--description", default="", metavar="TEXT")
    create.add_argument(
        "--rate", type=int, default=10, metavar="N", help="posts per author a minute"
    )
    create.add_argument("--size", type=int, default=2048, metavar="BYTES", help="a post's most")
    create.add_argument(
        "--pow", type=int, default=0, metavar="BITS", help="proof of work per post (0 to 24)"
    )
    info = rooms.command("info", _info, help="a room's rules, moderators and bans")
    info.add_argument("room", metavar="ROOM", help="its name, ID or link")
    post = rooms.command("post", _post, help="post in a room as this account")
    post.add_argument("room", metavar="ROOM", help="its name, ID or link")
    post.add_argument("text", metavar="TEXT")
    post.add_argument("--reply-to", default=None, metavar="POST", help="a post ID")
    read = rooms.command("read", _read, help="print a room's posts (exactly once)")
    read.add_argument("room", metavar="ROOM", help="its name, ID or link")
    read.add_argument("--follow", action="store_true", help="keep printing until Ctrl-C")
    read.add_argument("--since", default=None, help="10m, 2h, 1d, a time in ms, or all")
    read.add_argument("--count", type=int, default=0, metavar="N", help="stop after N posts")
    delete = rooms.command("delete", _delete, help="delete posts (owner or moderator)")
    delete.add_argument("room", metavar="ROOM", help="its name, ID or link")
    delete.add_argument("posts", metavar="POST", nargs="+", help="post IDs")
    ban = rooms.command("ban", _ban, help="ban an author (owner or moderator)")
    ban.add_argument("room", metavar="ROOM", help="its name, ID or link")
    ban.add_argument("author", metavar="AUTHOR", help="the author's account ID")
    ban.add_argument("--delete-past", action="store_true", help="also delete its posts")
    unban = rooms.command("unban", _unban, help="lift an author's ban")
    unban.add_argument("room", metavar="ROOM", help="its name, ID or link")
    unban.add_argument("author", metavar="AUTHOR", help="the author's account ID")
    mod = rooms.group("mod", help="the room's moderators (the room's home only)")
    for name, helptext in (("add", "make an account a moderator"), ("remove", "drop one")):
        each = mod.command(name, _mod, help=helptext)
        each.add_argument("room", metavar="ROOM", help="its name, ID or link")
        each.add_argument("account", metavar="ID", help="the account's ID")
        each.set_defaults(mod_op=name)
    rooms.command("list", _list, help="rooms this home created or reads")


def _run(ctx: Context, job: Any, *, identity: bool = True) -> Any:
    """``job(client)`` in a client on the home: as its account, its delegated session,
    or (``identity`` False) a throwaway key that names no one."""
    import trio

    from veil.client.files import read_network_file
    from veil.client.veil_client import open_client
    from veil.onion.keys import Account

    session = ctx.delegated if identity else None
    network = read_network_file(ctx.require_network())
    if not identity:
        account: Account | None = Account.generate()
    else:
        account = ctx.account() if session is None else None

    async def main() -> Any:
        async with open_client(ctx.home, network, account=account, delegated=session) as client:
            return await job(client)

    return trio.run(main)


def _room(client: VeilClient, name: str, *, as_owner: bool = True) -> Room:
    from veil.client.rooms import open_room

    return open_room(client, name, as_owner=as_owner)


def _create(ctx: Context) -> None:
    from veil.client.rooms import RoomRules, create_room

    args = ctx.args
    rules = RoomRules(rate=args.rate, size=args.size, pow_bits=args.pow)

    async def job(client: VeilClient) -> Any:
        return await create_room(client, args.name, description=args.description, rules=rules)

    room = _run(ctx, job)
    ctx.emit(
        {
            "id": str(room.id),
            "link": room.link,
            "name": room.name,
            "rules": {"rate": rules.rate, "size": rules.size, "pow_bits": rules.pow_bits},
        },
        f"{room.id}\n{room.link}",
    )


def _info(ctx: Context) -> None:
    async def job(client: VeilClient) -> Any:
        return await _room(client, ctx.args.room).info()

    # The room's own home reads as its owner (which renews what is past half its TTL);
    # anyone else reads as no one.
    info = _run(ctx, job, identity=ctx.home.has_identity())
    rules = info.rules
    lines = [
        f"{info.name} ({info.link})",
        *([info.description] if info.description else []),
        f"rules: {rules.rate} posts a minute per author, {rules.size} bytes, "
        f"{rules.pow_bits} bits of work",
        f"moderators: {', '.join(str(m) for m in info.moderators) or 'none'}",
        f"banned: {', '.join(str(b) for b in info.banned) or 'none'}",
        f"posts: {info.posts} (metadata #{info.seq})",
    ]
    ctx.emit(info.to_json(), "\n".join(lines))


def _post(ctx: Context) -> None:
    from veil.client.rooms import post_json

    args = ctx.args

    async def job(client: VeilClient) -> Any:
        return await _room(client, args.room).post(args.text, reply_to=args.reply_to)

    post = _run(ctx, job)
    ctx.emit(post_json(post), post.post_id.hex())


def _read(ctx: Context) -> None:
    from veil.client.cli.channel import _since
    from veil.client.rooms import PostDeleted, post_json

    args = ctx.args
    since = _since(args.since)

    def show(event: Any) -> None:
        if ctx.json:
            data = event.to_json() if isinstance(event, PostDeleted) else post_json(event)
            ctx.stdout.write(json.dumps(data) + "\n")
        elif isinstance(event, PostDeleted):
            ctx.stdout.write(f"deleted {event.post_id.hex()}\n")
        else:
            head = f"{event.post_id.hex()[:12]} {str(event.author)[:12]}"
            reply = f" (re {event.reply_to.hex()[:12]})" if event.reply_to else ""
            ctx.stdout.write(f"{head}{reply}: {event.text}\n")
        ctx.stdout.flush()

    async def job(client: VeilClient) -> None:
        room = _room(client, args.room, as_owner=False)
        if not args.follow:
            for event in await room.read(since):
                show(event)
            return
        count = 0
        async for event in room.messages(since):
            show(event)
            count += not isinstance(event, PostDeleted)
            if args.count and count >= args.count:
                return

    _run(ctx, job, identity=False)


def _delete(ctx: Context) -> None:
    async def job(client: VeilClient) -> Any:
        return await _room(client, ctx.args.room).delete(*ctx.args.posts)

    record = _run(ctx, job)
    ids = sorted(p.hex() for p in record.post_ids)
    ctx.emit({"deleted": ids, "record": record.record_id.hex()}, f"deleted {len(ids)}")


def _ban(ctx: Context) -> None:
    args = ctx.args

    async def job(client: VeilClient) -> Any:
        return await _room(client, args.room).ban(args.author, delete_past=args.delete_past)

    record = _run(ctx, job)
    ctx.emit(
        {"banned": str(record.who), "delete_past": record.delete_past},
        f"banned {record.who}" + (" and deleted its posts" if record.delete_past else ""),
    )


def _unban(ctx: Context) -> None:
    async def job(client: VeilClient) -> Any:
        return await _room(client, ctx.args.room).unban(ctx.args.author)

    record = _run(ctx, job)
    ctx.emit({"unbanned": str(record.who)}, f"unbanned {record.who}")


def _mod(ctx: Context) -> None:
    args = ctx.args

    async def job(client: VeilClient) -> Any:
        room = _room(client, args.room)
        if args.mod_op == "add":
            return await room.add_moderator(args.account)
        return await room.remove_moderator(args.account)

    meta = _run(ctx, job)
    mods = sorted(str(m) for m in meta.moderators)
    ctx.emit({"moderators": mods, "seq": meta.seq}, "\n".join(mods) or "(no moderators)")


def _list(ctx: Context) -> None:
    from veil.client.rooms import list_rooms

    known = list_rooms(ctx.home)
    if ctx.json:
        ctx.emit({"rooms": [k.to_json() for k in known]})
        return
    lines = [
        f"{'owns ' if k.owned else 'reads'} {k.id} {k.name or ''}"
        + (f" ({k.taken} posts, {k.dropped} dropped)" if k.taken or k.dropped else "")
        for k in known
    ]
    ctx.emit({}, "\n".join(lines) or "(none)")
