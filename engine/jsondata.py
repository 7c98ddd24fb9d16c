"""What every JSON value the engine stores must be: portable to SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from typing import Any


def json_problem(value: Any) -> str | None:
    """Why `value` cannot be stored as JSON, or None when it can.

    Beyond `json.dumps`: NaN and infinities are not JSON, and PostgreSQL's JSONB refuses the NUL
    character, so a value that only SQLite would take is refused everywhere.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"not JSON-serialisable: {exc}"
    if "\\u0000" in text:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    return None


def storable_text(text: str) -> str:
    """Text for a TEXT column: NUL characters shown as `\\x00` instead of refused by PostgreSQL."""
    return text.replace("\x00", "\\x00")
