"""``veil channel create|post|follow|invite|revoke-invite|list``: channels from the
command line.

Design notes
------------
* A channel is a fresh account whose seed this home keeps (``HOME/channels.sqlite``);
  ``create`` prints its ID and invite link, ``post`` publishes to it by name or ID.
* ``follow CHANNEL_OR_INVITE`` prints verified posts as they come until Ctrl-C
  (``--json``: one JSON object per post, flushed at once), resuming where the last
  follow of this home stopped; ``--since`` skips posts older than a duration (``10m``,
  ``2h``, ``1d``), a time in ms, or ``all``. Posts that do not verify are dropped,
  counted (``list`` shows the count) and never printed.
* ``create NAME --private`` makes a private channel: its posts are encrypted under a
  key that travels only in its invite link, after ``#``. ``invite NAME`` prints that
  link (with the key: share it with followers only); ``revoke-invite NAME`` draws a new
  key for future posts and prints the new link (no network: the next post uses it).
  ``follow`` takes the invite and nothing else (no identity is used or sent); posts it
  cannot open are counted (``list``: "locked") and said once on stderr, in particular
  that the invite was revoked.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from veil.client.cli.framework import Context, Registrar
from veil.client.errors import CliError

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = ["register"]


def register(reg: Registrar) -> None:
    ch = reg.group("channel", help="publish and follow channels (followers stay unnamed)")
    create = ch.command("create", _create, help="create a channel (a new account)")
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--private", action="store_true", help="posts encrypted; the key is in the invite"
    )
    post = ch.command("post", _post, help="publish a post to a channel this home owns")
    post.add_argument("channel", metavar="CHANNEL", help="its name or ID")
    post.add_argument("text", metavar="TEXT")
    post.add_argument("--ttl", type=float, default=7 * 86400, metavar="S", help="seconds kept")
    post.add_argument("--title", default=None)
    post.add_argument("--priority", type=int, default=3, metavar="N", help="1 to 5")
    post.add_argument("--tag", action="append", default=[], metavar="TAG", help="repeatable")
    follow = ch.command("follow", _follow, help="print a channel's posts as they come")
    follow.add_argument("channel", metavar="CHANNEL_OR_INVITE")
    follow.add_argument("--since", default=None, help="10m, 2h, 1d, a time in ms, or all")
    follow.add_argument("--count", type=int, default=0, metavar="N", help="stop after N posts")
    invite = ch.command("invite", _invite, help="print a channel's link (a private one's key)")
    invite.add_argument("channel", metavar="CHANNEL", help="its name or ID")
    revoke = ch.command(
        "revoke-invite", _revoke, help="new key for future posts of a private channel"
    )
    revoke.add_argument("channel", metavar="CHANNEL", help="its name or ID")
    ch.command("list", _list, help="channels this home owns and follows")


def _run(ctx: Context, job: Any, *, account: bool = True) -> Any:
    import trio

    from veil.client.files import read_network_file
    from veil.client.veil_client import open_client

    network = read_network_file(ctx.require_network())
    me = ctx.account() if account else None
    if me is None:
        from veil.onion.keys import Account

        me = Account.generate()  # a follower needs no identity: an unused throwaway key

    async def main() -> Any:
        async with open_client(ctx.home, network, account=me) as client:
            return await job(client)

    return trio.run(main)


def _since(text: str | None) -> int | None:
    if text is None or text == "all":
        return None
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return int(time.time() * 1000) - int(match.group(1)) * unit * 1000
    if text.isdigit():
        return int(text)
    raise CliError(f"--since takes 10m, 2h, 1d, a time in ms, or all, not {text[:40]!r}")


def _create(ctx: Context) -> None:
    from veil.client.channels import create_channel

    async def job(client: VeilClient) -> Any:
        return create_channel(client, ctx.args.name, private=ctx.args.private)

    channel = _run(ctx, job)
    ctx.emit(
        {
            "id": str(channel.id),
            "name": channel.name,
            "private": channel.private,
            "invite": channel.invite,
        },
        f"{channel.id}\n{channel.invite}",
    )
    if channel.private and not ctx.json:
        ctx.note("private channel: the invite carries its key; share it with followers only")


def _post(ctx: Context) -> None:
    from veil.client.channels import open_channel

    args = ctx.args

    async def job(client: VeilClient) -> Any:
        channel = open_channel(client, args.channel)
        return await channel.post(
            args.text, ttl=args.ttl, title=args.title, priority=args.priority, tags=args.tag
        )

    post = _run(ctx, job)
    ctx.emit(post.to_json(), post.post_id.hex())


def _follow(ctx: Context) -> None:
    from veil.client.channels import follow

    since = _since(ctx.args.since)
    limit = ctx.args.count

    def notice(kind: str, text: str) -> None:
        ctx.note(text)

    async def job(client: VeilClient) -> None:
        count = 0
        async for post in follow(client, ctx.args.channel, since=since, on_notice=notice):
            if ctx.json:
                ctx.stdout.write(json.dumps(post.to_json()) + "\n")
            else:
                head = f"[{post.priority}] {post.title}: " if post.title else f"[{post.priority}] "
                ctx.stdout.write(head + post.text + "\n")
            ctx.stdout.flush()
            count += 1
            if limit and count >= limit:
                return

    _run(ctx, job, account=False)


def _invite(ctx: Context) -> None:
    from veil.client.channels import _owned, _private_row, channel_invite

    home = ctx.home
    _, ident, _ = _owned(home, ctx.args.channel)
    private = _private_row(home, ident) is not None
    link = channel_invite(home, ctx.args.channel, account=ctx.account() if private else None)
    ctx.emit({"invite": link, "private": private}, link)


def _revoke(ctx: Context) -> None:
    from veil.client.channels import channel_invite, revoke_invite

    home = ctx.home
    account = ctx.account()
    revoke_invite(home, ctx.args.channel, account=account)
    link = channel_invite(home, ctx.args.channel, account=account)
    ctx.emit({"invite": link, "private": True}, link)
    if not ctx.json:
        ctx.note("the old invite reads the posts made before; this one, the posts from now on")


def _list(ctx: Context) -> None:
    from veil.client.channels import list_channels

    infos = list_channels(ctx.home)
    if ctx.json:
        ctx.emit({"channels": [i.to_json() for i in infos]})
        return
    lines = [
        f"{'owns   ' if i.owned else 'follows'} {i.id} {i.name or ''}"
        + (" (private)" if i.owned and i.private else "")
        + (
            ""
            if i.owned
            else f" ({i.taken} posts, {i.dropped} dropped"
            + (f", {i.locked} locked" if i.locked else "")
            + ")"
        )
        for i in infos
    ]
    ctx.emit({}, "\n".join(lines) or "(none)")
