"""The gateway's error handlers and its request middleware.

Design note
-----------
Errors are RFC 9457 problem+json (:mod:`veil.client.gateway.problems`), whatever raised
them: a :class:`~veil.client.gateway.problems.Problem` from a route; a body that is not
JSON, 400; a field out of bounds, 422 naming it (FastAPI's validation errors); any
other HTTP error of the framework (an unknown path, a wrong method) with its own status.
The middleware refuses a body larger than :data:`MAX_BODY_BYTES` (413) by its
``Content-Length``, before it is read, and counts and times every request in the
gateway's metrics by route.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from veil.client.gateway.problems import Problem, problem_response
from veil.client.gateway.shared import Gateway

#: A request body larger than this is refused (413) before it is read in full.
MAX_BODY_BYTES = 64 * 1024


def install_handlers(app: FastAPI, gw: Gateway) -> None:
    """Add the error handlers and the middleware to ``app``."""

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
