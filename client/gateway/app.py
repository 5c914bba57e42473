"""The gateway's ASGI application (FastAPI): routes, auth, errors, idempotency.

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
* Errors: RFC 9457 problem+json (:mod:`veil.client.gateway.problems`): a body that is not
  JSON 400; a field out of bounds 422 naming it; an unknown ticket, channel or broadcast
  404; a code used already 409; a code or send limit 429 with ``Retry-After``; the veil
  network unreachable, or slower than ``call_timeout_s``, 503 with ``Retry-After``
  (every network call is bounded: a request never hangs).
* ``Idempotency-Key`` on every POST (:mod:`veil.client.gateway.idempotency`).
"""

import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import trio
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from veil.client.bot import Bot, CodeAlreadyUsed, InvalidCodeRequest, TooManyCodes, UnknownTicket
from veil.client.errors import InvalidArgument, OnionRequestFailed, StateError
from veil.client.gateway.idempotency import (
    MAX_KEY_CHARS,
    Conflict,
    IdempotencyBook,
    Mismatch,
    Stored,
    request_digest,
)
from veil.client.gateway.metrics import GatewayMetrics
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
from veil.client.gateway.problems import PROBLEM_MEDIA_TYPE, Problem, ProblemBody, problem_response
from veil.client.gateway.store import GatewayStore
from veil.client.gateway.tokens import TokenBook, TokenInfo
from veil.onion.errors import InvalidTtl, NetworkError, VeilError

__all__ = ["DEFAULT_CALL_TIMEOUT_S", "Gateway", "create_app"]

log = logging.getLogger("veil.gateway")

#: A request's network work (a send, a post) is given up after this long: 503.
DEFAULT_CALL_TIMEOUT_S = 20.0
#: What a 503 tells a client to wait (s).
UNAVAILABLE_RETRY_S = 5
#: Messages to one recipient through the gateway per minute (more: 429, Retry-After), so
#: a leaked token cannot flood someone's inbox. Codes have their own limits (the bot's).
MESSAGES_PER_MINUTE = 20
#: A request body larger than this is refused (413) before it is read in full.
MAX_BODY_BYTES = 64 * 1024

_TICKET = r"^tk_[A-Za-z0-9_-]{22}$"
_ACCOUNT = r"^05[0-9a-f]{64}$"
_JOB = r"^bc_[A-Za-z0-9_-]{16}$"


class Gateway:
    """What the routes share: the bot, the gateway's store (tokens, idempotency), the
    metrics, and a nursery for background work (broadcasts)."""

    def __init__(
        self,
        bot: Bot,
        store: GatewayStore,
        *,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        messages_per_minute: int = MESSAGES_PER_MINUTE,
    ) -> None:
        self.bot = bot
        self.messages_per_minute = messages_per_minute
        self._sent: dict[str, deque[float]] = {}
        self.store = store
        self.tokens = TokenBook(store)
        self.idempotency = IdempotencyBook(store)
        self.metrics = GatewayMetrics()
        self.call_timeout_s = call_timeout_s
        self.nursery: trio.Nursery | None = None

    def may_send(self, to: str) -> None:
        """Count a message to ``to``; :class:`Problem` 429 past the per-minute limit."""
        now = time.monotonic()
        times = self._sent.setdefault(to, deque())
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= self.messages_per_minute:
            raise Problem(
                429,
                "too-many-messages",
                "Too many messages to this recipient",
                f"at most {self.messages_per_minute} a minute to one recipient",
                retry_after=times[0] + 60 - now,
            )
        times.append(now)
        if len(self._sent) > 100_000:  # forget idle recipients
            for key in [k for k, v in self._sent.items() if not v or v[-1] <= now - 60]:
                del self._sent[key]

    async def network(self, what: str, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``work`` (a call to the veil network) bounded by ``call_timeout_s``."""
        try:
            with trio.fail_after(self.call_timeout_s):
                return await work()
        except trio.TooSlowError:
            self.metrics.unavailable.inc()
            raise Problem(
                503,
                "network-unavailable",
                "The veil network did not answer in time",
                f"{what}: no answer within {self.call_timeout_s:g} s; nothing was sent "
                "for sure; retry later with the same Idempotency-Key",
                retry_after=UNAVAILABLE_RETRY_S,
            ) from None
        except OnionRequestFailed as exc:
            if exc.status == "rate_limited":
                raise Problem(
                    429,
                    "rate-limited",
                    "The recipient's swarm is rate limiting sends",
                    f"{what}: {exc}",
                    retry_after=UNAVAILABLE_RETRY_S,
                ) from None
            self.metrics.unavailable.inc()
            raise Problem(
                503,
                "network-unavailable",
                "The veil network is unreachable",
                f"{what}: {exc}",
                retry_after=UNAVAILABLE_RETRY_S,
            ) from None
        except NetworkError as exc:
            self.metrics.unavailable.inc()
            raise Problem(
                503,
                "network-unavailable",
                "The veil network is unreachable",
                f"{what}: {exc}",
                retry_after=UNAVAILABLE_RETRY_S,
            ) from None


# --- responses documented on every route ------------------------------------------------


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
    }


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "the body is not JSON",
        401: "no token, or an unknown or revoked one",
        403: "the token lacks the route's scope",
        404: "no such ticket, channel or broadcast",
        409: "the code was used already, or the Idempotency-Key's first request is running",
        413: "the body is too large",
        422: "a field out of bounds (named in `field`), or an Idempotency-Key reused "
        "with another body",
        429: "a code or send limit: retry after Retry-After seconds",
        503: "the veil network is unreachable: retry after Retry-After seconds",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = _problem(text[code])
        if code in (429, 503):
            out[code]["headers"] = _RETRY_AFTER
    return out


_AUTH = (401, 403)
_POST = (400, *_AUTH, 409, 413, 422)

# --- the app ---------------------------------------------------------------------------


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

    # --- error handlers ----------------------------------------------------------------

    @app.exception_handler(Problem)
    async def _on_problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        status = 422
        for err in exc.errors():
            # ("body", "to") -> "to"; ("path", "ticket") -> "ticket"; ("header", ...) too.
            loc = [str(p) for p in err.get("loc", ())]
            if loc and loc[0] in ("body", "path", "query", "header", "cookie"):
                loc = loc[1:]
            if err.get("type") == "json_invalid":
                status = 400
            field = ".".join(loc) if loc else "body"
            errors.append({"field": field, "message": str(err.get("msg", "invalid"))})
        first = errors[0]["field"] if errors else "body"
        title = "The body is not valid JSON" if status == 400 else "A field is out of bounds"
        return problem_response(
            Problem(
                status,
                "invalid-json" if status == 400 else "invalid-field",
                title,
                "; ".join(f"{e['field']}: {e['message']}" for e in errors)[:1000],
                field=first,
                errors=errors[:20],
            )
        )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
        return problem_response(
            Problem(
                exc.status_code,
                "http-" + str(exc.status_code),
                str(exc.detail),
                headers=dict(exc.headers or {}),
            )
        )

    @app.middleware("http")
    async def _measure(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            response: Response = problem_response(
                Problem(413, "too-large", "The body is too large", f"at most {MAX_BODY_BYTES} B")
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        gw.metrics.requests.labels(name, str(response.status_code)).inc()
        gw.metrics.seconds.labels(name).observe(time.perf_counter() - started)
        return response

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

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, sub in (
                ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
                .get("$defs", {})
                .items()
            ):
                components[name] = sub
            problem = ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
            problem.pop("$defs", None)
            components["ProblemBody"] = problem
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
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
