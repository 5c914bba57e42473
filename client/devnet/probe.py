"""Asking devnet processes over HTTP: ``GET /info`` and the verified consensus.

Design note
-----------
HTTP goes only to the loopback addresses the devnet recorded, with ``trust_env=False``
so that no proxy from the environment sees it, through one blocking httpx client made
on first use. An answer counts only if it comes from the member we recorded (its
``/info`` names the same ID): a port another program took since is not that member. A
consensus is returned only once verified against the pinned keys and threshold of
``network.json``, exactly as a client would verify it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from veil.client.devnet.members import Member
from veil.onion.directory import Consensus, NetworkFile, verify_consensus
from veil.onion.errors import VeilError
from veil.onion.wallclock import wall_clock_ms

__all__ = ["HTTP_TIMEOUT_S", "INFO_TIMEOUT_S", "Prober", "epoch_of"]

#: Timeout of a request to a devnet process (all on loopback).
HTTP_TIMEOUT_S = 5.0
#: Timeout of ``GET /info``: a process that takes longer is not ready.
INFO_TIMEOUT_S = 2.0


class Prober:
    """The devnet's HTTP client (blocking); :meth:`close` it when done."""

    def __init__(self) -> None:
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            # trust_env=False: a proxy from the environment must not see devnet traffic.
            self._http = httpx.Client(trust_env=False, timeout=HTTP_TIMEOUT_S)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def info(self, member: Member, timeout_s: float = INFO_TIMEOUT_S) -> dict[str, Any] | None:
        """``member``'s ``GET /info`` document; None if it does not answer with one."""
        try:
            r = self.http.get(f"{member.url}/info", timeout=timeout_s)
            if r.status_code != 200:
                return None
            doc = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def answers(self, member: Member) -> tuple[bool, dict[str, Any] | None]:
        """Whether the process runs, and its /info if it answers as the member we recorded
        (not another program on a reused port)."""
        if not member.is_running():
            return False, None
        info = self.info(member)
        if info is None:
            return True, None
        claimed = info.get("node_id") if member.role == "node" else info.get("key", member.id)
        return True, info if claimed == member.id else None

    def fetch_consensus(
        self, candidates: Sequence[Member], network: NetworkFile
    ) -> Consensus | None:
        """The current consensus from the first of ``candidates`` (authorities) that
        serves one that verifies against ``network``; None if none serves one.

        If some served a document that fails verification and none a valid one, the
        first such failure is raised (its :class:`~veil.onion.errors.VeilError`).
        """
        error: VeilError | None = None
        for member in candidates:
            try:
                r = self.http.get(f"{member.url}/consensus")
            except httpx.HTTPError:
                continue
            if r.status_code != 200:
                continue
            try:
                return verify_consensus(
                    r.content,
                    pinned=network.pinned_keys,
                    threshold=network.threshold,
                    now_ms=wall_clock_ms(),
                )
            except VeilError as exc:  # another authority may hold a valid one
                error = error or exc
        if error is not None:
            raise error
        return None


def epoch_of(info: Mapping[str, Any] | None) -> int | None:
    """The epoch of the consensus a process holds, from its ``/info`` (None: none)."""
    epoch = None if info is None else info.get("epoch")
    return epoch if type(epoch) is int else None
