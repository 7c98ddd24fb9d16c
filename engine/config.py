"""Configuration by environment (DESIGN section 4): the variable names and their defaults.

Kept free of heavy imports so that `engine --help` and `engine validate` start fast.
"""

from __future__ import annotations

DATABASE_ENV = "ENGINE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///engine.db"
"""A file in the working directory."""
RUNNERS_ENV = "ENGINE_RUNNERS"
"""Extra runner modules or folders, comma-separated."""
DISPATCHER_ENV = "ENGINE_DISPATCHER"
"""`direct` (the default), a name from `engine.dispatch.DISPATCHERS`, or `module:Class`."""
