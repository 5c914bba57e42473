"""The gateway's ASGI application (FastAPI): its routes.

(No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations,
which name dependencies local to :func:`create_app`.)

Design note
-----------
Every route does its work through the :class:`~veil.client.bot.Bot` it was made with
(persist, then send, as the bot does), in the bot's trio process: FastAPI runs on
hypercorn's trio worker (:mod:`veil.client.gateway.serve`), so a route awaits the bot's
coroutines directly. The OpenAPI 3.1 document (``GET /openapi.json``) is generated from
these routes and the models of :mod:`veil.client.gateway.models`.

* Auth: ``Authorization: Bearer vgw_...`` (:mod:`veil.client.gateway.tokens`); none or an
  unknown or revoked token: 401 with ``WWW-Authenticate: Bearer``; a token without the
  route's scope: 403.
* Errors: RFC 9457 problem+json (:mod:`veil.client.gateway.handlers`): an unknown
  ticket, channel or broadcast 404; a code used already 409; a code or send limit 429
  with ``Retry-After``; the network unreachable or slow 503
  (:mod:`veil.client.gateway.shared`: every network call is bounded).
* ``Idempotency-Key`` on every POST (:mod:`veil.client.gateway.answering`).
* Each route documents its error answers (:mod:`veil.client.gateway.responses`).
"""

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from veil.client.bot import CodeAlreadyUsed, InvalidCodeRequest, TooManyCodes, UnknownTicket
from veil.client.errors import InvalidArgument, StateError
from veil.client.gateway.answering import once_per_key
from veil.client.gateway.handlers import MAX_BODY_BYTES, install_handlers
from veil.client.gateway.idempotency import MAX_KEY_CHARS
from veil.client.gateway.models import (
    BroadcastIn,
    BroadcastOut,
    CodeCheckIn,
    CodeIn,
    CodeOut,
    Health,
    MessageIn,
    MessageOut,
    PostIn,
    PostOut,
    SubscribersOut,
)
from veil.client.gateway.problems import Problem
from veil.client.gateway.responses import _AUTH, _POST, _responses, document_problems
from veil.client.gateway.shared import (
    DEFAULT_CALL_TIMEOUT_S,
    MESSAGES_PER_MINUTE,
    UNAVAILABLE_RETRY_S,
    Gateway,
)
from veil.client.gateway.tokens import TokenInfo
from veil.onion.errors import InvalidTtl, VeilError

__all__ = [
    "DEFAULT_CALL_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MESSAGES_PER_MINUTE",
    "UNAVAILABLE_RETRY_S",
    "Gateway",
    "create_app",
]

log = logging.getLogger("veil.gateway")


_TICKET = r"^tk_[A-Za-z0-9_-]{22}$"
_ACCOUNT = r"^05[0-9a-f]{64}$"
_JOB = r"^bc_[A-Za-z0-9_-]{16}$"


def create_app(gw: Gateway) -> FastAPI:
    """The gateway's FastAPI application on ``gw``."""
    bot = gw.bot
    app = FastAPI(
        title="veil bot gateway",
        version="1",
        summary="Send one-time codes, messages, channel posts and broadcasts through a veil bot",
        description=(
            "Every route but /healthz needs `Authorization: Bearer TOKEN` (made with "
            "`veil bot token create --scope ...`). Errors are RFC 9457 problem+json. POSTs "
            "take an `Idempotency-Key` header: the same key and body give the first answer "
            "again."
        ),
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    bearer = HTTPBearer(auto_error=False, description="a token from `veil bot token create`")

    def scope(name: str) -> Callable[..., TokenInfo]:
        def check(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> TokenInfo:
            info = gw.tokens.verify(credentials.credentials) if credentials else None
            if info is None:
                raise Problem(
                    401,
                    "unauthorized",
                    "A valid bearer token is required",
                    "give Authorization: Bearer TOKEN (veil bot token create)",
                    headers={"WWW-Authenticate": 'Bearer realm="veil"'},
                )
            if name not in info.scopes:
                raise Problem(
                    403,
                    "forbidden",
                    f"This token lacks the {name!r} scope",
                    f"the token's scopes: {', '.join(info.scopes)}",
                )
            return info

        return check

    IdemKey = Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=MAX_KEY_CHARS,
            description="the same key and body give the first answer again",
        ),
    ]
    once = once_per_key(gw)
    install_handlers(app, gw)

    # --- routes --------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Whether the gateway is up (no token needed)."""
        return Health(status="ok", bot=str(bot.id))

    @app.get(
        "/metrics",
        tags=["service"],
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **_responses(*_AUTH),
        },
        response_class=Response,
    )
    async def metrics(token: Annotated[TokenInfo, Depends(scope("read"))]) -> Response:
        """Prometheus metrics (scope ``read``)."""
        return Response(gw.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.post(
        "/v1/messages",
        status_code=201,
        response_model=MessageOut,
        responses=_responses(*_POST, 429, 503),
        tags=["messages"],
    )
    async def send_message(
        body: MessageIn,
        request: Request,
        token: Annotated[TokenInfo, Depends(scope("messages"))],
        key: IdemKey = None,
    ) -> Response:
        """Send a message to an account (scope ``messages``)."""

        async def work() -> tuple[int, Any]:
            gw.may_send(body.to)
            try:
                digest = await gw.network(
                    "send", lambda: bot.send(body.to, body.text, ttl=body.ttl)
                )
            except (InvalidTtl, InvalidArgument) as exc:
                raise _invalid(exc, "text") from None
            gw.metrics.messages.inc()
            return 201, {"hash": digest.hex(), "to": body.to}

        return await once(request, token, key, work)

    @app.post(
        "/v1/codes",
        status_code=201,
        response_model=CodeOut,
        responses=_responses(*_POST, 429, 503),
        tags=["codes"],
    )
    async def send_code(
        body: CodeIn,
        request: Request,
        token: Annotated[TokenInfo, Depends(scope("codes"))],
        key: IdemKey = None,
    ) -> Response:
        """Send a one-time code (scope ``codes``): a ticket, ``status: pending``. The code's
        message lives on the network as long as the code."""

        async def work() -> tuple[int, Any]:
            try:
                ticket = await gw.network(
                    "send the code",
                    lambda: bot.send_code(
                        body.to,
                        body.purpose,
                        ttl=body.ttl,
                        digits=body.digits,
                        alphanumeric=body.alphanumeric,
                    ),
                )
            except TooManyCodes as exc:
                raise Problem(
                    429, "too-many-codes", "Too many codes", str(exc), retry_after=exc.retry_after_s
                ) from None
            except (InvalidCodeRequest, InvalidArgument) as exc:
                raise _invalid(exc, "to") from None
            gw.metrics.codes.inc()
            status = bot.code_status(ticket)
            return 201, {
                "ticket": ticket,
                "status": status.status,
                "attempts_left": status.attempts_left,
            }

        return await once(request, token, key, work)

    Ticket = Annotated[str, Path(pattern=_TICKET, description="a ticket from POST /v1/codes")]

    @app.post(
        "/v1/codes/{ticket}/check",
        response_model=CodeOut,
        responses=_responses(*_POST, 404),
        tags=["codes"],
    )
    async def check_code(
        ticket: Ticket,
        body: CodeCheckIn,
        request: Request,
        token: Annotated[TokenInfo, Depends(scope("codes"))],
        key: IdemKey = None,
    ) -> Response:
        """Check a code (scope ``codes``): ``approved``, or ``pending`` with attempts left,
        or ``expired``, ``max_attempts_reached``, ``canceled``. A used code: 409."""

        async def work() -> tuple[int, Any]:
            try:
                return 200, bot.check_code(ticket, body.code).to_json()
            except UnknownTicket:
                raise _no_ticket(ticket) from None
            except CodeAlreadyUsed:
                raise Problem(
                    409, "code-used", "This ticket's code was used already", "codes are single use"
                ) from None

        return await once(request, token, key, work)

    @app.get(
        "/v1/codes/{ticket}",
        response_model=CodeOut,
        responses=_responses(*_AUTH, 404, 422),
        tags=["codes"],
    )
    async def code_status(
        ticket: Ticket, token: Annotated[TokenInfo, Depends(scope("read"))]
    ) -> CodeOut:
        """A ticket's status (scope ``read``)."""
        try:
            return CodeOut(**bot.code_status(ticket).to_json())  # type: ignore[arg-type]
        except UnknownTicket:
            raise _no_ticket(ticket) from None

    @app.post(
        "/v1/codes/{ticket}/cancel",
        response_model=CodeOut,
        responses=_responses(*_POST, 404),
        tags=["codes"],
    )
    async def cancel_code(
        ticket: Ticket,
        request: Request,
        token: Annotated[TokenInfo, Depends(scope("codes"))],
        key: IdemKey = None,
    ) -> Response:
        """Cancel a pending ticket (scope ``codes``)."""

        async def work() -> tuple[int, Any]:
            try:
                return 200, bot.cancel_code(ticket).to_json()
            except UnknownTicket:
                raise _no_ticket(ticket) from None

        return await once(request, token, key, work)

    @app.post(
        "/v1/channels/{channel}/posts",
        status_code=201,
        response_model=PostOut,
        responses=_responses(*_POST, 404, 429, 503),
        tags=["channels"],
    )
    async def post_to_channel(
        channel: Annotated[
            str, Path(min_length=1, max_length=80, description="a channel of this bot's home")
        ],
        body: PostIn,
        request: Request,
        token: Annotated[TokenInfo, Depends(scope("channels"))],
        key: IdemKey = None,
    ) -> Response:
        """Post to a channel this bot's home owns, by name or ID (scope ``channels``)."""
        from veil.client.channels import open_channel

        async def work() -> tuple[int, Any]:
            try:
                opened = open_channel(bot.client, channel)
            except (InvalidArgument, StateError, VeilError):
                raise Problem(
                    404, "no-channel", "No such channel", "this bot's home owns no such channel"
                ) from None
            try:
                post = await gw.network(
                    "post",
                    lambda: opened.post(
                        body.text,
                        ttl=body.ttl,
                        title=body.title,
                        priority=body.priority,
                        tags=tuple(body.tags),
                    ),
                )
            except (InvalidTtl, InvalidArgument, ValueError) as exc:
                raise _invalid(exc, "text") from None
            out = post.to_json()
            out.pop("delegated", None)
            return 201, out

        return await once(request, token, key, work)

    @app.post(
        "/v1/broadcasts",
        status_code=202,
        response_model=BroadcastOut,
        responses=_responses(*_POST),
        tags=["broadcasts"],
    )
    async def broadcast(
        body: BroadcastIn,
        request: Request,
        token: Annotated[TokenInfo, Depends(scope("broadcast"))],
        key: IdemKey = None,
    ) -> Response:
        """Broadcast to every subscriber of a topic (scope ``broadcast``): the job is
        written (every envelope sealed) before this answers, then sent in the background;
        follow it with GET /v1/broadcasts/{id}."""

        async def work() -> tuple[int, Any]:
            try:
                job_id = bot.prepare_broadcast(body.topic, body.text, ttl=body.ttl)
            except (InvalidTtl, InvalidArgument) as exc:
                raise _invalid(exc, "text") from None
            if gw.nursery is not None:
                gw.nursery.start_soon(_run_broadcast, gw, job_id)
            return 202, _broadcast_view(gw, job_id)

        return await once(request, token, key, work)

    @app.get(
        "/v1/broadcasts/{job}",
        response_model=BroadcastOut,
        responses=_responses(*_AUTH, 404, 422),
        tags=["broadcasts"],
    )
    async def broadcast_progress(
        job: Annotated[str, Path(pattern=_JOB, description="a broadcast's id")],
        token: Annotated[TokenInfo, Depends(scope("read"))],
    ) -> dict[str, Any]:
        """A broadcast's progress (scope ``read``)."""
        return _broadcast_view(gw, job)

    @app.get(
        "/v1/subscribers",
        response_model=SubscribersOut,
        responses=_responses(*_AUTH, 422),
        tags=["broadcasts"],
    )
    async def subscribers(
        token: Annotated[TokenInfo, Depends(scope("read"))],
        topic: Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")],
        after: Annotated[
            str | None, Query(pattern=_ACCOUNT, description="the last ID seen")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> SubscribersOut:
        """A topic's subscribers, a page at a time, in ID order (scope ``read``)."""
        rows = bot.store.all(
            "SELECT recipient FROM subscribers WHERE topic = ? AND recipient > ? "
            "ORDER BY recipient LIMIT ?",
            (topic, after or "", limit + 1),
        )
        ids = [r[0] for r in rows]
        more = len(ids) > limit
        ids = ids[:limit]
        return SubscribersOut(topic=topic, subscribers=ids, next=ids[-1] if more else None)

    document_problems(app)
    return app


def _invalid(exc: Exception, field: str) -> Problem:
    text = str(exc)
    for name in ("ttl", "digits", "purpose", "topic", "title", "tags", "priority", "text", "to"):
        if name in text.lower():
            field = name
            break
    return Problem(422, "invalid-field", "A field is out of bounds", text, field=field)


def _no_ticket(ticket: str) -> Problem:
    return Problem(404, "no-ticket", "No such ticket", f"this bot has no ticket {ticket[:40]}")


def _broadcast_view(gw: Gateway, job_id: str) -> dict[str, Any]:
    row = gw.bot.store.one("SELECT topic, done FROM broadcasts WHERE job_id = ?", (job_id,))
    if row is None:
        raise Problem(404, "no-broadcast", "No such broadcast", f"no broadcast {job_id[:40]}")
    progress = gw.bot.broadcast_progress(job_id)
    return {
        "id": job_id,
        "topic": row[0],
        "status": "done" if row[1] else "running",
        "sent": progress.sent,
        "failed": progress.failed,
        "pending": progress.pending,
        "total": progress.sent + progress.failed + progress.pending,
    }


async def _run_broadcast(gw: Gateway, job_id: str) -> None:
    try:
        await gw.bot.run_broadcast(job_id)
    except Exception:  # the job stays in the database; the next start resumes it
        log.exception("broadcast %s stopped", job_id)
