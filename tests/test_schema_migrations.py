"""The schema is Alembic's: new databases are created at the head, others are checked."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from engine.errors import StoreError
from engine.store import Store, schema
from engine.store.store import make_engine

ENGINE = str(Path(sys.executable).parent / "engine")


def test_head_is_the_last_migration():
    config = Config()
    config.set_main_option("script_location", str(schema.MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == schema.HEAD


def test_a_new_database_is_created_by_the_migrations_exactly_as_the_models_say(db_url):
    store = Store(db_url)
    try:
        assert schema.revision(store.engine) == schema.HEAD
        with store.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert differences == []
    finally:
        store.close()


def test_a_database_at_an_older_revision_is_refused_with_the_command_to_run(
    db_url, monkeypatch
):
    Store(db_url).close()
    monkeypatch.setattr(schema, "HEAD", "0002")
    monkeypatch.setattr(schema, "_known_revisions", lambda: {"0001", "0002"})
    with pytest.raises(StoreError, match=r"revision 0001; this engine needs 0002: run `engine db upgrade`"):
        Store(db_url)


def test_a_database_from_a_newer_engine_is_refused(db_url):
    store = Store(db_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    with pytest.raises(StoreError, match="newer than this engine"):
        Store(db_url)


def test_engine_db_upgrade_brings_a_new_database_to_the_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    done = subprocess.run([ENGINE, "db", "upgrade", "--db", url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"revision {schema.HEAD}" in done.stderr
    engine = make_engine(url)
    try:
        assert schema.revision(engine) == schema.HEAD
    finally:
        engine.dispose()


def test_processes_opening_one_new_database_at_once_all_succeed(db_url, tmp_path):
    def list_runs(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ENGINE, "runs", "list", "--json", "--db", db_url],
            capture_output=True, text=True, cwd=tmp_path,
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(list_runs, range(4)))
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert all(r.stdout.strip() == "[]" for r in results)
