"""What every value the engine stores or hands between steps must be: plain JSON data, portable
to SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from engine.config import MAX_RESULT_BYTES_ENV


class NotJsonData(ValueError):
    """A value that cannot travel as JSON; the message says why, after its subject
    ("the result is 5,000,000 bytes as JSON, over the limit ...")."""


MAX_TEXT_CHARS = 65_536
"""The most of one error (message and traceback) that is stored; the middle is cut beyond."""


def json_copy(value: Any, max_bytes: int | None = None) -> Any:
    """`value` as JSON would carry it (tuples as lists, keys as strings), as a fresh copy.

    Raises NotJsonData as `json_text` does."""
    return json.loads(json_text(value, max_bytes))


def json_text(value: Any, max_bytes: int | None = None) -> str:
    """`value` as JSON text (not ASCII-escaped).

    Raises NotJsonData beyond what `json.dumps` refuses: NaN and infinities are not JSON, and
    PostgreSQL refuses the NUL character and lone surrogates, so a value that only SQLite would
    take is refused everywhere; and a value over `max_bytes` of JSON.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise NotJsonData(f"is not JSON-serialisable: {exc}") from None
    if max_bytes is not None and len(text) * 4 > max_bytes:  # UTF-8: 1 to 4 bytes a character
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise NotJsonData(
                f"is {size:,} bytes as JSON, "
                f"over the limit of {max_bytes:,} ({MAX_RESULT_BYTES_ENV})"
            )
    if "\\u0000" in text:
        raise NotJsonData("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotJsonData("contains text that is not valid Unicode (a lone surrogate)") from None
    return text


def json_size(value: Any) -> int:
    """The bytes of `value` (plain JSON data already) as `json_text` writes it, in UTF-8: what
    `max_bytes` is measured against."""
    text = json.dumps(value, ensure_ascii=False)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def json_pieces(
    head: dict[str, Any], key: str, entries: Iterable[Any], *, indent: int | None = None
) -> Iterator[str]:
    """The text of `json.dumps` of `head` with `key` last, holding `entries` (in place of any
    value `head` has there), in pieces of about `PIECE_CHARS`:
    indented by `indent` as `json.dumps` would, else compact (`,` and `:`, not ASCII-escaped, as
    an HTTP response); a list of 100,000 entries is never held whole, as objects or as text."""
    if indent is None:
        options: dict[str, Any] = {"separators": (",", ":"), "ensure_ascii": False}
    else:
        options = {"indent": indent}
    whole = {k: v for k, v in head.items() if k != key}
    opening, closing = json.dumps({**whole, key: []}, allow_nan=False, **options).rsplit("[]", 1)
    pad = "" if indent is None else "\n" + " " * (2 * indent)
    piece, size, separator = [opening, "["], 0, ""
    for entry in entries:
        text = json.dumps(entry, allow_nan=False, **options)
        piece.append(separator + (pad + text.replace("\n", pad) if pad else text))
        separator, size = ",", size + len(piece[-1])
        if size > PIECE_CHARS:
            yield "".join(piece)
            piece, size = [], 0
    if pad and separator:  # the closing bracket of a non-empty list on a line of its own
        piece.append(pad[: len(pad) // 2 + 1])
    yield "".join([*piece, "]", closing])


PIECE_CHARS = 64 * 1024
"""Past this, `json_pieces` hands over what it has: few writes, each of little memory."""


def json_kind(value: Any) -> str:
    """The JSON name of a value's type, as a YAML author knows it ("a list", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def storable_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Text any TEXT column takes: NUL and lone surrogates written as escapes, not refused; at
    most `limit` characters, its middle cut (the message's head and the traceback's end stay)."""
    if len(text) > limit:
        keep = limit // 2
        text = f"{text[:keep]}\n… [{len(text) - 2 * keep:,} characters cut] …\n{text[-keep:]}"
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
