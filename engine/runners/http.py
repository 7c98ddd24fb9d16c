"""`engine.http`: one HTTP request, with httpx (imported by the call, not by discovery)."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from engine.context import StepContext
from engine.errors import StepFailed
from engine.runners.values import Inputs, Text, truncated

if typing.TYPE_CHECKING:
    import httpx

BODY_START_CHARS = 500
"""How much of an unexpected response's body its error shows."""

Status = Annotated[int, Field(ge=100, le=599)]
Statuses = Annotated[
    list[Status],
    BeforeValidator(
        lambda v: [v] if isinstance(v, int) else v, json_schema_input_type=Status | list[Status]
    ),
]
"""One status or a list of them, kept as a list."""
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpInputs(Inputs):
    """The inputs of `engine.http`."""

    method: Method = "GET"
    url: str = Field(pattern=r"^https?://", description="an http:// or https:// URL")
    headers: dict[str, Text] = Field(default_factory=dict)
    query: dict[str, Text | list[Text]] = Field(
        default_factory=dict, description="added to the URL's query string; a list repeats a key"
    )
    json_: Any = Field(None, alias="json", description="a request body sent as JSON")
    body: str | None = Field(None, description="a request body sent as it is (not with json)")
    timeoutSeconds: float = Field(30.0, gt=0, description="for connecting, and between bytes")
    expectStatus: Statuses | None = Field(
        None, description="the status (or statuses) that succeed; default: any 2xx"
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("body")
    @classmethod
    def _not_with_json(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("json_") is not None:
            raise ValueError("give json or body, not both")
        return value

    def expected(self, status: int) -> bool:
        if self.expectStatus is None:
            return 200 <= status < 300
        return status in self.expectStatus


def http_request(inputs: HttpInputs, ctx: StepContext) -> dict[str, Any]:
    """Send the request; `{"status", "headers", "json"}`, with `"text"` instead of `"json"`
    when the response's content type is not JSON. A status not expected raises StepFailed
    with the start of the body."""
    import httpx

    where = f"{inputs.method} {inputs.url}"
    try:
        response = httpx.request(
            inputs.method,
            httpx.URL(inputs.url).copy_merge_params(inputs.query),  # params= would replace
            headers=inputs.headers,
            content=inputs.body,
            json=inputs.json_,
            timeout=inputs.timeoutSeconds,
        )
    except httpx.TimeoutException:
        raise StepFailed(f"{where}: no response within {inputs.timeoutSeconds:g}s") from None
    except httpx.HTTPError as exc:
        raise StepFailed(f"{where}: {type(exc).__name__}: {exc}") from None
    if not inputs.expected(response.status_code):
        wanted = "a 2xx status" if inputs.expectStatus is None else _listed(inputs.expectStatus)
        raise StepFailed(
            f"{where} answered {response.status_code} (expected {wanted}): "
            f"{truncated(response.text, BODY_START_CHARS)!r}"
        )
    return {"status": response.status_code, "headers": dict(response.headers), **_body(response)}


def _listed(statuses: list[int]) -> str:
    return " or ".join(map(str, statuses))


def _body(response: httpx.Response) -> dict[str, Any]:
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return {"json": response.json()}
        except ValueError:  # said JSON, is not: the text shows why
            pass
    return {"text": response.text}
