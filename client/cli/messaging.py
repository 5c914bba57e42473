"""``veil send``, ``veil inbox`` and ``veil status``: messaging from the command line.

Design notes
------------
* Each command opens a :class:`veil.client.veil_client.VeilClient` for its run (``trio.run``),
  does one thing and closes it; the client's state (guards, consensus, position,
  received messages, clock offset) lives in the home, so consecutive commands pick up
  where the last one stopped.
* Everything that can be checked without the network is checked first, so a mistake
  costs no round trip and gives one line: a recipient that is not an account ID, a
  message over the limit, a TTL out of range, no network file.
* ``veil inbox`` first takes what is waiting at the network, then lists the messages
  recorded in the home (so a message received earlier, by any veil command on this
  home, is listed too); ``--follow`` then prints new messages as they arrive until
  Ctrl-C. ``--json`` prints one JSON object per message, one per line, flushed at once,
  so another program can read them as they come.
* Under ``--delegated FILE`` the commands act for the session's account without its
  seed: ``inbox`` (and ``--follow``) lists the messages *sealed* (hash, size: the
  session cannot open them), ``send`` is refused (a message is signed by the account),
  and a session that has expired or lacks ``retrieve`` in the inbox is refused before
  anything is sent.
* Errors a user can act on are one line (the framework prints every VeilError so):
  no network file, no authority reachable, a bad recipient, a message too large.
"""

from __future__ import annotations

import base64
import datetime
from typing import TYPE_CHECKING, Any

from veil.client.cli.framework import Context, Registrar
from veil.client.errors import CliError

if TYPE_CHECKING:
    from veil.client.messaging import InboxMessage
    from veil.client.veil_client import VeilClient

__all__ = ["register"]

#: How many recorded messages ``veil inbox`` lists by default (the most recent).
DEFAULT_LIST = 50


def register(reg: Registrar) -> None:
    send = reg.command(
        "send",
        _send,
        help="send a message to an account",
        description="Send TEXT to the account ID, through an onion path to a node of its "
        "swarm. TEXT '-' reads the message from standard input.",
    )
    send.add_argument("recipient", metavar="ID", help="the recipient's account ID (05...)")
    send.add_argument("text", metavar="TEXT", help="the message, or - to read standard input")
    send.add_argument(
        "--ttl",
        dest="ttl_s",
        type=float,
        metavar="S",
        default=None,
        help="seconds the message waits in the recipient's inbox (10 to 1209600; default 14 days)",
    )
    inbox = reg.command(
        "inbox",
        _inbox,
        help="receive and list your messages",
        description="Take the messages waiting for you at the network, then list the most "
        "recent ones received on this home. --follow keeps printing new messages as they "
        "arrive (until Ctrl-C).",
    )
    inbox.add_argument("--follow", action="store_true", help="keep printing new messages")
    inbox.add_argument(
        "--limit",
        type=int,
        metavar="N",
        default=DEFAULT_LIST,
        help=f"list at most the N most recent messages first (default {DEFAULT_LIST}; 0: none)",
    )
    reg.command(
        "status",
        _status,
        help="show the network, your guards and paths",
        description="Show the consensus in use, your guard nodes, your onion paths and "
        "your clock's offset from the network's, and probe one path.",
    )


# --- helpers -----------------------------------------------------------------------------


def _run(ctx: Context, job: Any) -> Any:
    """Open a client on the home and network, run ``job(client)`` under trio."""
    import trio

    from veil.client.files import read_network_file
    from veil.client.veil_client import open_client

    session = ctx.delegated  # first: a damaged session file is the error to report
    network = read_network_file(ctx.require_network())
    account = ctx.account() if session is None else None

    async def main() -> Any:
        async with open_client(ctx.home, network, account=account, delegated=session) as client:
            return await job(client)

    return trio.run(main)


def _recipient(text: str) -> Any:
    from veil.onion.errors import InvalidId
    from veil.onion.keys import AccountId

    try:
        return AccountId.parse(text)
    except InvalidId as e:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise CliError(
            f"not an account ID: {shown!r} ({e}; an account ID is 05 followed by 64 hex digits)"
        ) from None


def _message_bytes(ctx: Context, text: str) -> bytes:
    from veil.client.messaging import MAX_MESSAGE_BYTES

    if text != "-":
        data = text.encode("utf-8", "surrogateescape")
    else:
        stream = ctx.stdin
        if stream is None:
            raise CliError("no standard input to read the message from")
        raw = getattr(stream, "buffer", None)
        got = (
            raw.read(MAX_MESSAGE_BYTES + 1)
            if raw is not None
            else stream.read(MAX_MESSAGE_BYTES + 1)
        )
        data = got.encode("utf-8", "surrogateescape") if isinstance(got, str) else bytes(got)
    if len(data) > MAX_MESSAGE_BYTES:
        size = "over " + str(MAX_MESSAGE_BYTES) if text == "-" else str(len(data))
        raise CliError(f"message too large: {size} bytes; the most is {MAX_MESSAGE_BYTES}")
    if not data:
        raise CliError("empty message: nothing to send")
    return data


def _when(ms: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(ms / 1000).astimezone()
    except (OverflowError, OSError, ValueError):
        return "?"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _message_json(m: InboxMessage) -> dict[str, Any]:
    if m.envelope is not None:  # received under a delegated session: not opened
        return {
            "hash": m.hash.hex(),
            "sealed": base64.b64encode(m.envelope).decode(),
            "size": len(m.envelope),
            "received_ms": m.received_ms,
        }
    doc: dict[str, Any] = {
        "hash": m.hash.hex(),
        "from": str(m.sender),
        "sent_ms": m.sent_ms,
        "received_ms": m.received_ms,
    }
    try:
        doc["text"] = m.content.decode("utf-8")
    except UnicodeDecodeError:
        doc["base64"] = base64.b64encode(m.content).decode()
    return doc


def _show(ctx: Context, m: InboxMessage) -> None:
    if m.envelope is not None:
        text = f"{_when(m.received_ms)}  (sealed, {len(m.envelope)} bytes)  {m.hash.hex()}"
        ctx.emit(_message_json(m), text)
        return
    ctx.emit(_message_json(m), f"{_when(m.sent_ms)}  {m.sender}\n  {m.text}")


# --- veil send ---------------------------------------------------------------------------


def _send(ctx: Context) -> None:
    from veil.client.messaging import DEFAULT_TTL_S, check_ttl
    from veil.onion.errors import InvalidTtl

    if ctx.delegated_file is not None:
        raise CliError(
            "a message is signed by the account's seed: `veil send` cannot run under "
            "--delegated (a delegated session has no seed)"
        )
    to = _recipient(ctx.args.recipient)
    ttl_s = DEFAULT_TTL_S if ctx.args.ttl_s is None else ctx.args.ttl_s
    try:
        check_ttl(ttl_s)
    except InvalidTtl as e:
        raise CliError(str(e)) from None
    data = _message_bytes(ctx, ctx.args.text)

    async def job(client: VeilClient) -> Any:
        return await client.send(to, data, ttl_s=ttl_s)

    sent = _run(ctx, job)
    ctx.emit(
        {"to": str(sent.to), "hash": sent.hash.hex(), "expiry_ms": sent.expiry_ms},
        f"sent to {sent.to} (message {sent.hash.hex()[:16]})",
    )


# --- veil inbox --------------------------------------------------------------------------


def _inbox(ctx: Context) -> None:
    limit = ctx.args.limit
    if limit < 0:
        raise CliError("--limit must be 0 or more")

    async def job(client: VeilClient) -> None:
        fresh = await client.fetch()
        last_seq = 0
        recorded: list[InboxMessage] = []
        while limit:  # page through the records, keeping the most recent `limit`
            page = client.inbox(after_seq=last_seq, limit=1000)
            if not page:
                break
            last_seq = page[-1].seq
            recorded = (recorded + page)[-limit:]
        if ctx.args.follow:
            # The fetch above took these from the network: the iterator below will not
            # yield them again, so a follower shows them whatever --limit says of the
            # history (with --limit 0 they were never printed before).
            # (By hash: a fetched message's seq is 0 until read back from the state.)
            listed = {m.hash for m in recorded}
            # Any not listed are older than the window (it holds the newest records).
            recorded = [m for m in fresh if m.hash not in listed] + recorded
        for m in recorded:
            _show(ctx, m)
        if not ctx.args.follow:
            if not recorded and not ctx.json:
                ctx.note("no messages")
            return
        async for m in client.messages():
            _show(ctx, m)

    _run(ctx, job)


# --- veil status -------------------------------------------------------------------------


def _status(ctx: Context) -> None:
    from veil.onion.errors import VeilError

    async def job(client: VeilClient) -> dict[str, Any]:
        try:
            answer = await client.ping()
            probe: dict[str, Any] = {
                "ok": True,
                "rtt_ms": round(answer.rtt_ms, 2),
                "hops": len(answer.path.relays) + 1,
            }
        except VeilError as e:
            probe = {"ok": False, "error": str(e)}
        status = client.status()
        status["probe"] = probe
        return status

    status = _run(ctx, job)
    ctx.emit(status, _status_text(status))


def _status_text(s: dict[str, Any]) -> str:
    net = s["network"]
    lines = [f"account   {s['account_id']}"]
    if s.get("delegated"):
        d = s["delegated"]
        lines.append(
            f"delegated {d['did']} until {_when(d['expires_ms'])}: {', '.join(d['resources'])}"
        )
    lines += [
        f"network   epoch {net['epoch']}: {net['nodes']} nodes in {net['swarms']} swarms, "
        f"{'fresh' if net['fresh'] else 'not fresh'}; authorities "
        f"{', '.join(net['authorities'])} ({net['threshold']} must sign)",
        f"clock     the network's is {s['clock_offset_ms']:+d} ms from this machine's",
    ]
    for i, g in enumerate(s["guards"]):
        where = g["address"] or "not in the consensus"
        lines.append(
            f"{'guards' if i == 0 else '':<10}{g['node_id'][:16]} {where} "
            f"({g['failures']} failures)"
        )
    for i, p in enumerate(s["paths"]):
        relays = " -> ".join(r.split()[1] for r in p["relays"])
        lines.append(
            f"{'paths' if i == 0 else '':<10}{relays} -> (destination)  "
            f"{p['successes']} ok, {p['failures']} failed"
        )
    lines.append(f"swarm     {s['swarm']['id']}: {len(s['swarm']['members'])} members")
    probe = s["probe"]
    if probe["ok"]:
        lines.append(f"probe     ok, {probe['rtt_ms']} ms through {probe['hops']} hops")
    else:
        lines.append(f"probe     failed: {probe['error']}")
    return "\n".join(lines)
