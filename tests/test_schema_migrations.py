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


def test_a_database_at_an_older_revision_is_refused_with_the_command_to_run(db_url):
    engine = make_engine(db_url)
    try:
        schema.upgrade(engine, "0001")
    finally:
        engine.dispose()
    needs = rf"revision 0001; this engine needs {schema.HEAD}: run `engine db upgrade`"
    with pytest.raises(StoreError, match=needs):
        Store(db_url)


def test_upgrading_from_the_first_revision_keeps_every_row(db_url, tmp_path):
    engine = make_engine(db_url)
    try:
        schema.upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO batch_definition (name, version, steps, source, created_at) "
                    "VALUES ('etl', 'v1', '[]', 'name: etl', '2026-11-26 02:00:00.000000')"
                    if engine.dialect.name == "sqlite"
                    else "INSERT INTO batch_definition (name, version, steps, source, created_at) "
                    "VALUES ('etl', 'v1', '[]', 'name: etl', '2026-11-26T02:00:00+00:00')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO batch_instance (definition_id, definition_name, status, trigger, "
                    "params, created_at) VALUES (1, 'etl', 'succeeded', 'cli', '{\"day\": 1}', "
                    + (
                        "'2026-11-26 02:00:00.000000')"
                        if engine.dialect.name == "sqlite"
                        else "'2026-11-26T02:00:00+00:00')"
                    )
                )
            )
    finally:
        engine.dispose()

    done = subprocess.run(
        [ENGINE, "db", "upgrade", "--db", db_url], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr

    store = Store(db_url)
    try:
        (instance,) = store.list_instances()
        assert (instance.definition, instance.status, instance.params) == (
            "etl",
            "succeeded",
            {"day": 1},
        )
        assert instance.abandoned is False
    finally:
        store.close()


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
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(list_runs, range(4)))
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert all(r.stdout.strip() == "[]" for r in results)
