"""Waiting until a devnet is ready, and saying precisely why it is not.

Design note
-----------
Three waits, each a poll with a deadline:

* :func:`wait_started`: each new process has written its info file (``node.json`` or
  ``authority.json``) naming its own pid, and answers ``GET /info``;
* :func:`wait_for_consensus`: a verified consensus satisfies a condition (for example
  :func:`nodes_condition`: it lists these nodes and not those);
* :func:`wait_for_sync`: each node holds that consensus or a later one (the ``epoch`` of
  its ``/info``), so that it routes, stores and replicates by it.

A watched process that exits fails the wait at once (:class:`DevnetStartError`) with
its name, its exit code and the tail of its log (:func:`tail_block`); so does the
deadline, naming what was missing. Waiting never fixes anything: the caller (the
manager) decides what to stop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence

from veil.client.devnet.members import Member
from veil.client.devnet.probe import Prober, epoch_of
from veil.client.devnet.spawning import indent
from veil.client.errors import DevnetStartError
from veil.onion.directory import Consensus
from veil.onion.errors import VeilError
from veil.onion.hostport import BadHostPort, parse_hostport

__all__ = [
    "check_alive",
    "nodes_condition",
    "read_info_file",
    "tail_block",
    "wait_for_consensus",
    "wait_for_sync",
    "wait_started",
]

# Pauses between polls: a process writes its info file within milliseconds of
# listening; an authority publishes a consensus once an interval.
_START_POLL_S = 0.05
_CONSENSUS_POLL_S = 0.1
_SYNC_POLL_S = 0.05


def wait_started(prober: Prober, members: Sequence[Member], deadline: float) -> None:
    """Wait until each member has written its info file naming its pid and answers
    GET /info; :class:`DevnetStartError` if one exits or the ``deadline``
    (``time.monotonic()``) passes."""
    pending = list(members)
    while pending:
        check_alive(members, "while starting")
        for member in list(pending):
            if read_info_file(member) and prober.info(member) is not None:
                pending.remove(member)
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(m.name for m in pending)
            tails = "\n".join(tail_block(m) for m in pending)
            raise DevnetStartError(f"not ready in time: {names}\n{tails}")
        time.sleep(_START_POLL_S)


def read_info_file(member: Member) -> bool:
    """Take ``member``'s address (and a node's IDs) from its info file; False if the
    file is not yet there, or was left by an earlier process."""
    try:
        doc = json.loads(member.info_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or doc.get("pid") != member.pid:
        return False  # not yet written, or left by an earlier process
    host, port = doc.get("host"), doc.get("port")
    if (not isinstance(host, str) or type(port) is not int) and isinstance(doc.get("address"), str):
        try:
            host, port = parse_hostport(doc["address"])
        except BadHostPort:
            return False
    if not isinstance(host, str) or type(port) is not int:
        return False
    member.host, member.port = host, port
    if member.role == "node":
        node_id, onion_key = doc.get("node_id"), doc.get("onion_key")
        if not isinstance(node_id, str) or not isinstance(onion_key, str):
            return False
        member.id, member.onion_key = node_id, onion_key
    elif isinstance(doc.get("key"), str) and doc["key"] != member.id:
        raise DevnetStartError(
            f"{member.name} runs with key {doc['key'][:16]}..., but authority-init "
            f"gave {member.id[:16]}...; network.json would pin the wrong key"
        )
    return True


def wait_for_consensus(
    fetch: Callable[[], Consensus | None],
    authorities: Sequence[Member],
    predicate: Callable[[Consensus], bool],
    *,
    timeout_s: float,
    what: str,
    watch: Iterable[Member] = (),
    explain: Callable[[Consensus], str] | None = None,
) -> Consensus:
    """Call ``fetch`` until the consensus it returns satisfies ``predicate``.

    Fails (:class:`DevnetStartError`) as soon as a ``watch``ed member exits or none of
    ``authorities`` runs, or after ``timeout_s``, naming ``what`` was missing
    (``explain`` says what the last consensus lacks).
    """
    deadline = time.monotonic() + timeout_s
    watched = list(watch)
    last: Consensus | None = None
    last_error: str | None = None
    while True:
        check_alive(watched, f"while waiting for {what}")
        if not any(m.is_running() for m in authorities):
            check_alive(authorities, f"while waiting for {what}")
        try:
            found = fetch()
        except VeilError as exc:
            found, last_error = None, f"{type(exc).__name__}: {exc}"
        if found is not None:
            last = found
            if predicate(found):
                return found
        if time.monotonic() > deadline:
            if last is None:
                seen = f"no authority served a valid consensus ({last_error or 'none yet'})"
            else:
                seen = f"the last consensus (epoch {last.epoch}) lists {len(last.nodes)} nodes"
                if explain is not None:
                    seen += f"; {explain(last)}"
            tails = "\n".join(tail_block(m) for m in authorities)
            raise DevnetStartError(f"no {what} after {timeout_s:.0f} s: {seen}\n{tails}")
        time.sleep(_CONSENSUS_POLL_S)


def nodes_condition(
    want: Sequence[Member], gone: Sequence[Member]
) -> tuple[Callable[[Consensus], bool], Callable[[Consensus], str], str]:
    """For :func:`wait_for_consensus`: the predicate "lists every node of ``want`` and
    none of ``gone``", its explanation of a consensus that fails it, and its name."""
    want_ids = {bytes.fromhex(m.id) for m in want}
    gone_ids = {bytes.fromhex(m.id) for m in gone}

    def ok(c: Consensus) -> bool:
        ids = {n.node_id for n in c.nodes}
        return want_ids <= ids and not (gone_ids & ids)

    def explain(c: Consensus) -> str:
        ids = {n.node_id for n in c.nodes}
        missing = [m.name for m in want if bytes.fromhex(m.id) not in ids]
        extra = [m.name for m in gone if bytes.fromhex(m.id) in ids]
        return f"missing: {', '.join(missing) or '-'}; still listed: {', '.join(extra) or '-'}"

    names = ", ".join(m.name for m in want) or "-"
    gone_names = ", ".join(m.name for m in gone) or "-"
    return ok, explain, f"consensus with [{names}] and without [{gone_names}]"


def wait_for_sync(
    prober: Prober, consensus: Consensus, members: Sequence[Member], *, timeout_s: float
) -> None:
    """Wait until each of ``members`` holds ``consensus`` or a later one (its ``GET
    /info`` ``epoch``); :class:`DevnetStartError` if one exits, or after ``timeout_s``
    naming the nodes behind."""
    deadline = time.monotonic() + timeout_s
    behind = list(members)
    while True:
        check_alive(members, f"while waiting for nodes to adopt epoch {consensus.epoch}")
        epochs = {m: epoch_of(prober.info(m)) for m in behind}
        behind = [m for m in behind if (epochs[m] or -1) < consensus.epoch]
        if not behind:
            return
        if time.monotonic() > deadline:
            lag = ", ".join(f"{m.name} (epoch {epochs[m]})" for m in behind)
            raise DevnetStartError(
                f"nodes still behind consensus epoch {consensus.epoch} after "
                f"{timeout_s:.0f} s: {lag}"
            )
        time.sleep(_SYNC_POLL_S)


def check_alive(members: Iterable[Member], when: str) -> None:
    """:class:`DevnetStartError` naming each started member that has exited, ``when``."""
    dead = [m for m in members if m.pid is not None and not m.is_running()]
    if dead:
        blocks = "\n".join(tail_block(m) for m in dead)
        names = ", ".join(m.name for m in dead)
        raise DevnetStartError(f"{names} exited {when}\n{blocks}")


def tail_block(member: Member) -> str:
    """A heading naming ``member``, its pid and state, then the last lines of its log."""
    code = member.exit_code
    state = (
        f"exited with code {code}"
        if code is not None
        else ("running" if member.is_running() else "not running")
    )
    tail = member.log_tail() or "(empty log)"
    return (
        f"--- {member.name} (pid {member.pid}, {state}); last lines of {member.log_path}:\n"
        f"{indent(tail)}"
    )
