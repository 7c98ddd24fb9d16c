"""What a request body must be: JSON, declared as JSON.

FastAPI answers both a malformed body and a body of another content type with a 422 that reads
as if the fields were wrong; these say what is wrong instead. A 422 stays for well-formed JSON
that does not fit the model.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from engine.api.models import Message

JSON_BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Message, "description": "The body is not valid JSON."},
    415: {"model": Message, "description": "The body is not sent as `application/json`."},
}
"""What a route taking a JSON body adds to its documented responses."""


async def require_json(request: Request) -> None:
    """415 for a body whose Content-Type is not `application/json` (or `…+json`), or absent.

    A missing Content-Type is refused too, as FastAPI itself does not read such a body as
    JSON: it is what a page on another site can send without a CORS preflight. An empty body
    passes, and gets the model's 422 for its missing fields.
    """
    if await request.body() and not _is_json(request.headers.get("content-type", "")):
        raise HTTPException(415, "send the body as JSON, with Content-Type: application/json")


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def invalid_request(request: Request, error: Exception) -> Response:
    """400 for a body that is not valid JSON, saying where; FastAPI's 422 for the rest."""
    assert isinstance(error, RequestValidationError)
    for problem in error.errors():
        if problem["type"] == "json_invalid" and isinstance(error.body, str):
            decoded = json.JSONDecodeError(problem["ctx"]["error"], error.body, problem["loc"][1])
            return JSONResponse({"detail": f"the body is not valid JSON: {decoded}"}, 400)
    return await request_validation_exception_handler(request, error)
