"""``veil bot ...``: run a bot, broadcast to its subscribers, send and check one-time codes.

Design notes
------------
* The bot is the home's account; its database and code secret are in ``HOME/bot``
  (:class:`veil.client.bot.BotStore`). Commands that only read or decide there
  (``code check``, ``code status``, ``code cancel``, ``subscribers``) need no network.
* ``veil bot run`` answers messages until Ctrl-C (``--json``: one JSON line per message
  handled), after finishing any broadcast a previous run left unfinished.
* ``veil bot broadcast TOPIC TEXT`` writes the job (every envelope sealed) before it
  sends anything, shows a progress bar on stderr (``--json``: one JSON line of progress
  per subscriber done, then the result), and ``veil bot broadcast --resume`` finishes
  jobs a killed run left: each subscriber gets the message exactly once.
* ``veil bot code send ID --purpose P`` prints the ticket; ``veil bot code check TICKET
  CODE`` prints the status (exit 0 only when approved, 1 otherwise, so a shell script
  can use it).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from veil.client.cli.framework import Context, Registrar
from veil.client.errors import CliError, UsageError

if TYPE_CHECKING:
    from veil.client.bot import Bot

__all__ = ["register"]


def register(reg: Registrar) -> None:
    bot = reg.group(
        "bot",
        help="run a bot: commands, subscribers, broadcasts, one-time codes",
        description="A bot is this home's account run as a service; its data is in HOME/bot.",
    )
    run = bot.command(
        "run",
        _run_bot,
        help="answer commands (/start, /help, /subscribe, ...) until Ctrl-C",
    )
    run.add_argument("--name", default=None, help="the bot's name, shown in help and codes")
    run.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="a topic one may subscribe to (repeat; default: any)",
    )
    cast = bot.command(
        "broadcast",
        _broadcast,
        help="send a message to every subscriber of a topic, exactly once",
    )
    cast.add_argument("topic", metavar="TOPIC", nargs="?", help="the topic")
    cast.add_argument("text", metavar="TEXT", nargs="?", help="the message")
    cast.add_argument("--resume", action="store_true", help="finish unfinished broadcasts")
    cast.add_argument("--ttl", type=float, default=7 * 86400, metavar="S", help="seconds kept")
    cast.add_argument("--concurrency", type=int, default=8, metavar="N")
    cast.add_argument("--rate", type=float, default=30.0, metavar="PER_S", help="sends a second")
    subs = bot.command("subscribers", _subscribers, help="list the subscribers of a topic")
    subs.add_argument("topic", metavar="TOPIC")
    serve = bot.command(
        "serve",
        _serve,
        help="run the bot and its HTTP gateway (codes, messages, posts) until Ctrl-C",
        description="The bot and its HTTP API in one process; GET /openapi.json documents it.",
    )
    serve.add_argument(
        "--listen", default="127.0.0.1:8787", metavar="HOST:PORT", help="default 127.0.0.1:8787"
    )
    serve.add_argument("--name", default=None, help="the bot's name, shown in help and codes")
    serve.add_argument(
        "--topic", action="append", default=[], metavar="TOPIC", help="a topic (repeat)"
    )
    serve.add_argument("--tls-cert", default=None, metavar="FILE", help="serve HTTPS")
    serve.add_argument("--tls-key", default=None, metavar="FILE", help="the certificate's key")
    serve.add_argument(
        "--allow-public",
        action="store_true",
        help="bind a non-loopback address without TLS (a TLS proxy in front)",
    )
    serve.add_argument(
        "--call-timeout",
        type=float,
        default=20.0,
        metavar="S",
        help="give a request's network work up after S seconds (503)",
    )
    serve.add_argument(
        "--messages-per-minute",
        type=int,
        default=20,
        metavar="N",
        help="messages to one recipient a minute through POST /v1/messages (more: 429)",
    )
    token = bot.group("token", help="the HTTP gateway's bearer tokens")
    create = token.command("create", _token_create, help="make a token (shown once)")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="SCOPE",
        help="codes, messages, channels, broadcast or read (repeat, or comma-separated)",
    )
    create.add_argument("--name", default="", help="a note: what the token is for")
    token.command("list", _token_list, help="list the tokens (never their secrets)")
    revoke = token.command("revoke", _token_revoke, help="revoke a token")
    revoke.add_argument("token_id", metavar="ID", help="the token's ID (or the token)")
    code = bot.group("code", help="one-time codes (2FA)")
    send = code.command("send", _code_send, help="send a one-time code to an account")
    send.add_argument("recipient", metavar="ID", help="the recipient's account ID")
    send.add_argument("--purpose", required=True, help="what the code is for (e.g. login)")
    send.add_argument("--ttl", type=int, default=600, metavar="S", help="lifetime (10-600 s)")
    send.add_argument("--digits", type=int, default=6, metavar="N", help="6 to 10")
    send.add_argument("--alphanumeric", action="store_true", help="letters and digits")
    send.add_argument("--name", default=None, help="the bot's name, shown in the message")
    check = code.command("check", _code_check, help="check a code (exit 0 only if approved)")
    check.add_argument("ticket", metavar="TICKET")
    check.add_argument("code", metavar="CODE")
    status = code.command("status", _code_status, help="a ticket's status")
    status.add_argument("ticket", metavar="TICKET")
    cancel = code.command("cancel", _code_cancel, help="cancel a pending ticket")
    cancel.add_argument("ticket", metavar="TICKET")


# --- helpers -----------------------------------------------------------------------------


def _with_bot(ctx: Context, job: Any, *, name: str | None = None, topics: Any = None) -> Any:
    import trio

    from veil.client.bot import Bot
    from veil.client.files import read_network_file
    from veil.client.veil_client import open_client

    network = read_network_file(ctx.require_network())
    account = ctx.account()

    async def main() -> Any:
        async with open_client(ctx.home, network, account=account) as client:
            bot = Bot(client, name=name, topics=topics)
            try:
                return await job(bot)
            finally:
                bot.close()

    return trio.run(main)


def _codebook(ctx: Context) -> Any:
    import time

    from veil.client.bot import BotStore, CodeBook

    path = ctx.home.path / "bot"
    if not (path / "bot.sqlite").exists():
        raise CliError(f"no bot in {ctx.home.path} (nothing was sent from it)")
    return CodeBook(BotStore(path), lambda: int(time.time() * 1000))


def _show_check(ctx: Context, result: Any) -> int:
    text = result.status
    if result.status == "pending":
        text += f" ({result.attempts_left} attempts left)"
    ctx.emit(result.to_json(), text)
    return 0 if result.status == "approved" else 1


# --- handlers ----------------------------------------------------------------------------


def _run_bot(ctx: Context) -> None:
    import json

    topics = {t: "" for t in ctx.args.topic} or None

    async def job(bot: Bot) -> None:
        ctx.note(f"serving as {bot.id} ({bot.link()}); Ctrl-C to stop")
        async for message in bot.client.messages():
            await bot.handle(message)
            if ctx.json:
                ctx.stdout.write(
                    json.dumps({"from": str(message.sender), "text": message.text[:200]}) + "\n"
                )
                ctx.stdout.flush()

    async def serve(bot: Bot) -> None:
        import trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bot.resume_broadcasts)
            await job(bot)

    _with_bot(ctx, serve, name=ctx.args.name, topics=topics)


def _broadcast(ctx: Context) -> int:
    import json

    args = ctx.args
    if args.resume == bool(args.topic):
        raise UsageError("give TOPIC TEXT, or --resume")
    if args.topic and args.text is None:
        raise UsageError("give the message TEXT")

    def progress(p: Any) -> None:
        if ctx.json:
            ctx.stdout.write(
                json.dumps(
                    {"job_id": p.job_id, "sent": p.sent, "failed": p.failed, "pending": p.pending}
                )
                + "\n"
            )
            ctx.stdout.flush()
        else:
            total = p.sent + p.failed + p.pending
            done = p.sent + p.failed
            width = 30
            filled = width * done // total if total else width
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                f"sent {p.sent} failed {p.failed}"
            )
            sys.stderr.flush()

    options = {"progress": progress, "concurrency": args.concurrency, "rate_per_s": args.rate}

    async def job(bot: Bot) -> list[Any]:
        if args.resume:
            return list(await bot.resume_broadcasts(**options))
        return [await bot.broadcast(args.topic, args.text, ttl=args.ttl, **options)]

    results = _with_bot(ctx, job)
    if not ctx.json:
        sys.stderr.write("\n")
    failed = 0
    for result in results:
        failed += result.failed
        ctx.emit(
            {"result": result.to_json()},
            f"{result.job_id}: {result.topic}: sent {result.sent}, failed {result.failed} "
            f"of {result.total}",
        )
    if not results:
        ctx.emit({"result": None}, "nothing to resume")
    return 1 if failed else 0


def _subscribers(ctx: Context) -> None:
    from veil.client.bot import BotStore

    store = BotStore(ctx.home.path / "bot")
    try:
        rows = store.all(
            "SELECT recipient FROM subscribers WHERE topic = ? ORDER BY recipient",
            (ctx.args.topic,),
        )
    finally:
        store.close()
    ids = [r[0] for r in rows]
    ctx.emit({"topic": ctx.args.topic, "subscribers": ids}, "\n".join(ids) or "(none)")


def _code_send(ctx: Context) -> None:
    args = ctx.args
    from veil.onion.errors import InvalidId
    from veil.onion.keys import AccountId

    try:
        recipient = AccountId.parse(args.recipient)
    except InvalidId as e:
        raise CliError(f"not an account ID: {args.recipient[:80]!r} ({e})") from None

    async def job(bot: Bot) -> str:
        return await bot.send_code(
            recipient,
            args.purpose,
            ttl=args.ttl,
            digits=args.digits,
            alphanumeric=args.alphanumeric,
        )

    ticket = _with_bot(ctx, job, name=args.name)
    ctx.emit({"ticket": ticket, "status": "pending", "ttl": args.ttl}, ticket)


def _code_check(ctx: Context) -> int:
    book = _codebook(ctx)
    try:
        return _show_check(ctx, book.check(ctx.args.ticket, ctx.args.code))
    finally:
        book.store.close()


def _code_status(ctx: Context) -> int:
    book = _codebook(ctx)
    try:
        result = book.status(ctx.args.ticket)
    finally:
        book.store.close()
    _show_check(ctx, result)
    return 0


def _code_cancel(ctx: Context) -> None:
    book = _codebook(ctx)
    try:
        result = book.cancel(ctx.args.ticket)
    finally:
        book.store.close()
    ctx.emit(result.to_json(), result.status)


# --- the HTTP gateway ----------------------------------------------------------------------


def _gateway_store(ctx: Context) -> Any:
    from veil.client.gateway import GatewayStore

    return GatewayStore(ctx.home.path / "bot")


def _serve(ctx: Context) -> None:
    import json

    from veil.client.gateway import check_listen, parse_listen

    args = ctx.args
    listen = parse_listen(args.listen)
    check_listen(
        listen, certfile=args.tls_cert, keyfile=args.tls_key, allow_public=args.allow_public
    )
    if args.call_timeout <= 0:
        raise UsageError("--call-timeout is a positive number of seconds")
    if args.messages_per_minute < 1:
        raise UsageError("--messages-per-minute is at least 1")
    topics = {t: "" for t in args.topic} or None

    async def job(bot: Bot) -> None:
        import trio

        from veil.client.gateway import Gateway, create_app, serve_gateway

        store = _gateway_store(ctx)
        try:
            gateway = Gateway(
                bot,
                store,
                call_timeout_s=args.call_timeout,
                messages_per_minute=args.messages_per_minute,
            )
            app = create_app(gateway)
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(
                    lambda task_status: serve_gateway(
                        gateway,
                        app,
                        listen,
                        certfile=args.tls_cert,
                        keyfile=args.tls_key,
                        task_status=task_status,
                    )
                )
                ctx.note(f"bot {bot.id} serving HTTP on {', '.join(binds)}; Ctrl-C to stop")
                if ctx.json:
                    ctx.stdout.write(json.dumps({"bot": str(bot.id), "listen": binds}) + "\n")
                    ctx.stdout.flush()
        finally:
            store.close()

    _with_bot(ctx, job, name=args.name, topics=topics)


def _token_create(ctx: Context) -> None:
    from veil.client.gateway import TokenBook

    scopes = [s.strip() for item in ctx.args.scope for s in item.split(",") if s.strip()]
    store = _gateway_store(ctx)
    try:
        token, info = TokenBook(store).create(scopes, ctx.args.name)
    finally:
        store.close()
    if not ctx.json:
        ctx.note(f"token {info.token_id} ({' '.join(info.scopes)}); shown once, keep it secret")
    ctx.emit({"token": token, **info.to_json()}, token)


def _token_list(ctx: Context) -> None:
    from veil.client.gateway import TokenBook

    store = _gateway_store(ctx)
    try:
        tokens = TokenBook(store).list()
    finally:
        store.close()
    lines = [
        f"{t.token_id}  {' '.join(t.scopes):30}  "
        f"{'revoked' if t.revoked_ms else 'live':8}  {t.name}"
        for t in tokens
    ]
    ctx.emit({"tokens": [t.to_json() for t in tokens]}, "\n".join(lines) or "(none)")


def _token_revoke(ctx: Context) -> None:
    from veil.client.gateway import TokenBook

    store = _gateway_store(ctx)
    try:
        done = TokenBook(store).revoke(ctx.args.token_id)
    finally:
        store.close()
    if not done:
        raise CliError(f"no live token {ctx.args.token_id[:40]!r}")
    ctx.emit({"revoked": ctx.args.token_id}, f"revoked {ctx.args.token_id}")
