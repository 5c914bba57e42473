"""The error answers the gateway documents in its OpenAPI document.

Design note
-----------
Every route lists the problem+json answers it can give (:func:`_responses` of the codes:
``_AUTH`` for a route that needs a token, ``_POST`` for one that takes a body), each
with the ``ProblemBody`` schema and, for 429 and 503, the ``Retry-After`` header; and
:func:`document_problems` puts ``ProblemBody`` (and the schemas it names) into the
document's components, which FastAPI does not do for a schema the routes name only by
``$ref``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from veil.client.gateway.problems import PROBLEM_MEDIA_TYPE, ProblemBody


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


def document_problems(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document name ``ProblemBody`` among its components (once
    its routes are added)."""
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
