"""The built-in runners, under keys that user runners cannot take (`engine.` ...).

Each declares its inputs as a pydantic model, so `engine validate` checks them and `engine schema`
describes them. The libraries that do the work (subprocess, httpx, SQLAlchemy) are imported by
the call, so that discovering these costs `engine validate` nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from engine.runners.http import http_request
from engine.runners.shell import shell_command
from engine.runners.sql import sql_query

BUILTINS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {"engine.http": http_request, "engine.shell": shell_command, "engine.sql": sql_query}
)
"""The built-in runners by key; `JobRegistry.add_builtins` registers them."""
