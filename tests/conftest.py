"""Shared fixtures: fresh registries, and stores on real SQLite and PostgreSQL.

A service a test needs is real. When it is unreachable the test skips, except with
ENGINE_REQUIRE_SERVICES=1 (set by .ci/run), where it fails: CI must really run it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.registry import JobRegistry
from engine.store import Store

POSTGRES_URL = os.environ.get(
    "ENGINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = os.environ.get("ENGINE_REQUIRE_SERVICES") == "1"


def unavailable(service: str, reason: str) -> None:
    """Skip, or fail when services are required."""
    message = f"{service} unreachable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (ENGINE_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def registry() -> JobRegistry:
    return JobRegistry()


def _postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_URL)
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable("PostgreSQL", str(exc).splitlines()[0])
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'engine.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'engine.db'}")
    yield store
    store.close()
