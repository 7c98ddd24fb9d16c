"""What the built-in runners' inputs share."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Inputs(BaseModel):
    """The base of the built-in runners' inputs: unknown keys are errors, and the validator is
    built on first use, so that discovery (every `engine validate`) does not pay for runners
    that no step uses."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


def _as_text(value: Any) -> Any:
    # Numbers and booleans as JSON writes them; anything else is left for the str check.
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return value


Text = Annotated[str, BeforeValidator(_as_text, json_schema_input_type=str | int | float | bool)]
"""A string that also takes a number or a boolean, written as JSON writes it (`8080`, `true`):
a template that is exactly one `{{ expr }}` keeps its value's type, so `"{{ steps.a.result.n }}"`
arrives as an integer where a command argument, a variable or a header needs text."""


def truncated(text: str, limit: int) -> str:
    """The start of `text`, at most `limit` characters, saying how much more there was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"
