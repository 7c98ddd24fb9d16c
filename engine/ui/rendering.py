"""The UI's Jinja2 templates (autoescaped: whatever a run holds is shown as text) and the
filters they format times and JSON with."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from engine.ui.svg import duration

TEMPLATES = Path(__file__).parent / "templates"
JSON_CHARS = 64 * 1024
"""A result shown on a page is cut after this many characters (a mapped step's result lists
every item's)."""


def when(moment: datetime | None) -> str:
    """A stored time as UTC wall time to the second, blank when unset."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def wall(moment: datetime, zone: str) -> str:
    """A UTC instant as wall time in an IANA zone, with the zone's abbreviation."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def took(started: datetime | None, finished: datetime | None, now: datetime) -> str:
    """How long it ran (until now when it has not ended), blank when it never started."""
    if started is None:
        return ""
    return duration(((finished or now) - started).total_seconds())


def as_json(value: Any, limit: int = JSON_CHARS) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit:,} more characters not shown]"


ERROR_CHARS = 8 * 1024
"""An error on a page keeps its head (the message) and its tail (where the traceback ends)."""
FIRST_LINE_CHARS = 200


def cut_error(error: str, limit: int = ERROR_CHARS) -> str:
    if len(error) <= limit:
        return error
    keep = limit // 2
    cut = len(error) - 2 * keep
    return f"{error[:keep]}\n… [{cut:,} characters not shown] …\n{error[-keep:]}"


def first_line(text: str | None, limit: int = FIRST_LINE_CHARS) -> str:
    """The first line of an error, at most `limit` characters: what a row of a table shows."""
    line = (text or "").split("\n", 1)[0]
    return line if len(line) <= limit else line[:limit] + "…"


def compact(value: Any) -> str:
    """JSON on one line, as plain text for autoescape (Jinja2's `tojson` is markup, whose quotes
    would end an attribute)."""
    return json.dumps(value, ensure_ascii=False)


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["when"] = when
environment.filters["wall"] = wall
environment.filters["as_json"] = as_json
environment.filters["compact"] = compact
environment.filters["cut_error"] = cut_error
environment.filters["first_line"] = first_line
environment.globals["took"] = took


def page(
    request: Request, template: str, csrf: str, code: int = 200, **context: Any
) -> HTMLResponse:
    """`template` rendered with `context`, the CSRF token every form of the page posts, and
    whether the server has logins (a logout button), answered with `code`."""
    html = environment.get_template(template).render(
        request=request,
        csrf=csrf,
        logins=request.app.state.ui.sessions.token is not None,
        **context,
    )
    return HTMLResponse(html, status_code=code)
