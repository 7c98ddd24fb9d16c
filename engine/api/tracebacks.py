"""Step errors over HTTP: the message without the traceback, whose lines name the server's files.

The database keeps the whole error, and `engine runs show --json` prints it;
`ENGINE_API_TRACEBACKS=1` shows it over HTTP too.
"""

from __future__ import annotations

import re
from typing import Any

_TRACEBACK = re.compile(
    r"\n\n(?:  \+ Exception Group )?Traceback \(most recent call last\):"
    r"|\n… \[[\d,]+ characters cut\] …\n"
)
"""Where a stored error's traceback starts, or where storage cut a long error's middle."""


def without_traceback(error: str) -> str:
    """`error` up to its traceback.

    A runner's error is stored as `Type: message`, a blank line, then the traceback
    (`StepOutcome.failure`; a Celery worker's alike); an error without one is kept whole. An
    error too long to store whole had its middle cut (`engine.jsondata.storable_text`): only
    its head is kept, as its tail is the traceback's end.
    """
    return _TRACEBACK.split(error, maxsplit=1)[0]


def step_without_traceback(step: dict[str, Any]) -> dict[str, Any]:
    """A step attempt's JSON as the API shows it unless `ENGINE_API_TRACEBACKS` is on."""
    if step["error"] is not None:
        step["error"] = without_traceback(step["error"])
    return step
