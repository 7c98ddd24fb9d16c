"""What every value the engine stores or hands between steps must be: plain JSON data, portable
to SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from typing import Any


class NotJsonData(ValueError):
    """A value that cannot travel as JSON; the message says why."""


def json_copy(value: Any) -> Any:
    """`value` as JSON would carry it (tuples as lists, keys as strings), as a fresh copy.

    Raises NotJsonData beyond what `json.dumps` refuses: NaN and infinities are not JSON, and
    PostgreSQL refuses the NUL character and lone surrogates, so a value that only SQLite would
    take is refused everywhere.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise NotJsonData(f"not JSON-serialisable: {exc}") from None
    if "\\u0000" in text:
        raise NotJsonData("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotJsonData("contains text that is not valid Unicode (a lone surrogate)") from None
    return json.loads(text)


def storable_text(text: str) -> str:
    """Text any TEXT column takes: NUL and lone surrogates written as escapes, not refused."""
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
