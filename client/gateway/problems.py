"""RFC 9457 problem details: every error the gateway answers is
``application/problem+json`` with ``type``, ``title``, ``status``, ``detail``, and, when
one field of the request is at fault, ``field`` (and ``errors``, one per field)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["PROBLEM_MEDIA_TYPE", "FieldError", "Problem", "ProblemBody", "problem_response"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPES = "https://veil.invalid/problems/"


class FieldError(BaseModel):
    field: str = Field(description="the field at fault, dotted (body fields by name)")
    message: str


class ProblemBody(BaseModel):
    """An RFC 9457 problem."""

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str = ""
    field: str | None = Field(default=None, description="the first field at fault, if any")
    errors: list[FieldError] | None = None
    retry_after: int | None = Field(default=None, description="seconds, as Retry-After")


class Problem(Exception):
    """Raised by a route: answered as problem+json (``retry_after``: a Retry-After)."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str = "",
        *,
        field: str | None = None,
        errors: list[dict[str, str]] | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.field = field
        self.errors = errors
        self.retry_after = None if retry_after is None else max(1, int(retry_after + 0.999))
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": _TYPES + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.field is not None:
            out["field"] = self.field
        if self.errors:
            out["errors"] = self.errors
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def problem_response(problem: Problem) -> Any:
    from starlette.responses import Response

    return Response(
        json.dumps(problem.body()).encode(),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.response_headers(),
    )
