"""Configuration by environment (DESIGN section 4): the variable names and their defaults.

Kept free of heavy imports so that `engine --help` and `engine validate` start fast.
"""

from __future__ import annotations

DATABASE_ENV = "ENGINE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///engine.db"
"""A file in the working directory."""
RUNNERS_ENV = "ENGINE_RUNNERS"
"""Extra runner modules or folders, comma-separated."""
LEASE_ENV = "ENGINE_LEASE_SECONDS"
"""How long a running instance's lease lasts without renewal; default 30 (seconds)."""
DEFAULT_LEASE_SECONDS = 30.0
DISPATCHER_ENV = "ENGINE_DISPATCHER"
"""`direct` (the default), a name from `engine.dispatch.DISPATCHERS`, or `module:Class`."""

API_TOKEN_ENV = "ENGINE_API_TOKEN"
"""The bearer token every HTTP route but `/healthz` requires; needed to listen beyond loopback."""
