"""`engine.sql`: queries on real SQLite and PostgreSQL databases (the engine's own store is a
separate SQLite file)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from builtin_steps import one_step

from engine.registry import JobRegistry

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def registry(registry: JobRegistry) -> JobRegistry:
    return registry.add_builtins()


@pytest.fixture
def target(db_url: str, tmp_path) -> str:
    """A database of each kind holding `sales` (three rows); not the store's."""
    if db_url.startswith("sqlite"):
        db_url = f"sqlite:///{tmp_path / 'target.db'}"
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT, n INTEGER)"))
        conn.execute(
            sa.text("INSERT INTO sales VALUES (1, 'north', 5), (2, 'south', 7), (3, 'east', 2)")
        )
    engine.dispose()
    return db_url


@pytest.fixture
def sql(sqlite_store, registry, target):
    """`sql(query, **inputs)`: the one attempt of an `engine.sql` step on `target`."""

    def query(text: str, **inputs):
        [attempt] = one_step(
            sqlite_store,
            registry,
            "engine.sql",
            {"url": "{{ params.url }}", "query": text, **inputs},
            params={"url": target},
        ).steps
        return attempt

    return query


def test_fetch_all_is_a_list_of_row_objects(sql):
    attempt = sql("SELECT id, region FROM sales WHERE n > :least ORDER BY id", params={"least": 3})
    assert attempt.status == "succeeded"
    assert attempt.result == [{"id": 1, "region": "north"}, {"id": 2, "region": "south"}]


def test_fetch_one_is_one_row_or_null(sql):
    found = sql("SELECT region FROM sales WHERE id = :id", params={"id": 2}, fetch="one")
    assert found.result == {"region": "south"}
    missing = sql("SELECT region FROM sales WHERE id = :id", params={"id": 9}, fetch="one")
    assert missing.status == "succeeded" and missing.result is None


def test_fetch_one_of_several_rows_fails(sql):
    attempt = sql("SELECT region FROM sales", fetch="one")
    assert attempt.status == "failed"
    assert attempt.error.startswith(
        "StepFailed: fetch: one, but the query returned more than one row"
    )


def test_fetch_none_commits_and_counts_the_rows(sql, target):
    attempt = sql("UPDATE sales SET n = n + :by WHERE n < :below", params={"by": 10, "below": 6})
    assert attempt.status == "failed", "fetch: all of a statement without rows"
    assert "use fetch: none" in attempt.error
    assert sql("SELECT n FROM sales ORDER BY id").result == [{"n": 5}, {"n": 7}, {"n": 2}], (
        "the failed attempt's update was rolled back"
    )
    updated = sql(
        "UPDATE sales SET n = n + :by WHERE n < :below", params={"by": 10, "below": 6}, fetch="none"
    )
    assert updated.result == {"rowcount": 2}
    assert sql("SELECT n FROM sales ORDER BY id").result == [{"n": 15}, {"n": 7}, {"n": 12}]


def test_params_are_bound_not_pasted(sql):
    hostile = "north'; DROP TABLE sales; --"
    assert sql("SELECT id FROM sales WHERE region = :r", params={"r": hostile}).result == []
    assert len(sql("SELECT id FROM sales").result) == 3


def test_a_database_error_fails_the_attempt_with_its_message(sql):
    attempt = sql("SELECT nope FROM sales")
    assert attempt.status == "failed"
    assert attempt.error.startswith(("OperationalError: ", "ProgrammingError: "))
    assert "nope" in attempt.error.split("\n")[0]


def test_a_missing_parameter_fails_naming_it(sql):
    attempt = sql("SELECT id FROM sales WHERE id = :id")
    assert attempt.status == "failed"
    assert "'id'" in attempt.error.split("\n")[0]


def test_two_columns_of_one_name_fail_asking_for_an_alias(sql):
    attempt = sql("SELECT a.id, b.id FROM sales a JOIN sales b ON a.id = b.id")
    assert attempt.error.startswith(
        "StepFailed: the query returns more than one column named 'id': give each an alias"
    )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_values_come_back_as_json_data(sql):
    attempt = sql(
        """
        SELECT DATE '2026-11-26' AS day,
               TIMESTAMP '2026-11-26 02:00:00' AS at,
               TIME '02:30:00' AS clock,
               CAST(12.50 AS NUMERIC(10, 2)) AS amount,
               CAST(12345678901234567890 AS NUMERIC) AS big,
               INTERVAL '90 minutes' AS span,
               CAST('c56a4180-65aa-42ec-a945-5fd21dec0538' AS UUID) AS id,
               CAST('hi' AS BYTEA) AS raw,
               CAST('{"a": [1, 2]}' AS JSONB) AS doc,
               ARRAY[DATE '2026-11-26', DATE '2026-11-27'] AS days
        """,
        fetch="one",
    )
    assert attempt.status == "succeeded", attempt.error
    assert attempt.result == {
        "day": "2026-11-26",
        "at": "2026-11-26T02:00:00",
        "clock": "02:30:00",
        "amount": 12.5,
        "big": 12345678901234567890,
        "span": 5400.0,
        "id": "c56a4180-65aa-42ec-a945-5fd21dec0538",
        "raw": "aGk=",
        "doc": {"a": [1, 2]},
        "days": ["2026-11-26", "2026-11-27"],
    }
