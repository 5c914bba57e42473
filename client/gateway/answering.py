"""A POST's answer, at most once per ``Idempotency-Key``.

Design note
-----------
Every POST takes an ``Idempotency-Key`` (:mod:`veil.client.gateway.idempotency` keeps the
answers): the same key and body give the first answer again, marked
``Idempotent-Replayed``; the same key with another body is a 422; a key whose first
request is still running is a 409 with ``Retry-After``. A route's work returns its
status and JSON body, or raises a :class:`~veil.client.gateway.problems.Problem`; either
is stored as the key's answer, and the store is finished (shielded from cancellation)
whatever happens, so a key is never left running.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from fastapi import Request
from fastapi.responses import Response

from veil.client.gateway.idempotency import Conflict, Mismatch, Stored, request_digest
from veil.client.gateway.problems import PROBLEM_MEDIA_TYPE, Problem
from veil.client.gateway.shared import Gateway
from veil.client.gateway.tokens import TokenInfo

#: A route's work: its status and JSON-able body (or a Problem raised).
Work = Callable[[], Awaitable[tuple[int, Any]]]
#: ``once(request, token, key, work)``: the route's response.
Once = Callable[[Request, TokenInfo, str | None, Work], Awaitable[Response]]


def once_per_key(gw: Gateway) -> Once:
    """The ``once`` the routes of ``gw``'s app answer through."""

    async def once(
        request: Request,
        token: TokenInfo,
        key: str | None,
        work: Callable[[], Awaitable[tuple[int, Any]]],
    ) -> Response:
        """Run ``work`` (status, JSON-able body) at most once per idempotency key."""
        if key is None:
            return _answer(await _guarded(work))
        body = await request.body()
        digest = request_digest(request.method, request.url.path, body)
        try:
            stored = gw.idempotency.begin(token.token_id, key, digest)
        except Mismatch:
            raise Problem(
                422,
                "idempotency-key-reused",
                "This Idempotency-Key was used with another request",
                "use a new key for a new request",
                field="Idempotency-Key",
            ) from None
        except Conflict:
            raise Problem(
                409,
                "idempotency-key-running",
                "The first request with this Idempotency-Key is still running",
                "retry in a moment",
                retry_after=1,
            ) from None
        if stored is not None:
            gw.metrics.replays.inc()
            return Response(
                stored.body,
                status_code=stored.status,
                headers={**stored.headers, "Idempotent-Replayed": "true"},
                media_type=stored.headers.get("content-type", "application/json"),
            )
        answer = Stored(500, b"", {})
        try:
            answer = await _guarded(work)
            return _answer(answer)
        finally:
            with trio.CancelScope(shield=True):
                gw.idempotency.finish(token.token_id, key, answer)

    async def _guarded(work: Callable[[], Awaitable[tuple[int, Any]]]) -> Stored:
        try:
            status, content = await work()
            return Stored(
                status, json.dumps(content).encode(), {"content-type": "application/json"}
            )
        except Problem as problem:
            return Stored(
                problem.status,
                json.dumps(problem.body()).encode(),
                {"content-type": PROBLEM_MEDIA_TYPE, **problem.response_headers()},
            )

    def _answer(stored: Stored) -> Response:
        headers = {k: v for k, v in stored.headers.items() if k != "content-type"}
        return Response(
            stored.body,
            status_code=stored.status,
            headers=headers,
            media_type=stored.headers.get("content-type", "application/json"),
        )

    return once
