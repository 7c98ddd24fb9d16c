"""`engine.sql`: one query on any database SQLAlchemy reaches, in a transaction of its own.

Values come back as JSON data: dates, times and datetimes as ISO 8601 strings, decimals as
numbers (integers when whole; cast to text in the query to keep every digit of a wider one),
intervals as seconds, UUIDs as strings, binary data as base64. Duplicate column names are
refused, since a row object could keep only one of them.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import uuid
from typing import Any, Literal

from pydantic import Field

from engine.context import StepContext
from engine.errors import StepFailed
from engine.runners.values import Inputs


class SqlInputs(Inputs):
    """The inputs of `engine.sql`."""

    url: str = Field(
        min_length=1, description="a SQLAlchemy URL, such as postgresql+psycopg://host/db"
    )
    query: str = Field(min_length=1, description="one statement; :name marks a parameter")
    params: dict[str, Any] = Field(default_factory=dict, description="the :name parameters")
    fetch: Literal["all", "one", "none"] = Field(
        "all",
        description="all: a list of row objects; one: one row or null (more is an error); "
        "none: {rowcount: n}",
    )


def sql_query(inputs: SqlInputs, ctx: StepContext) -> Any:
    """Run the query and commit; its rows as `fetch` says."""
    import sqlalchemy as sa

    engine = sa.create_engine(inputs.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(inputs.query), inputs.params)
            if inputs.fetch == "none":
                return {"rowcount": result.rowcount}
            if not result.returns_rows:  # raised inside: the transaction is rolled back
                raise StepFailed(
                    f"fetch: {inputs.fetch}, but the statement returns no rows: "
                    "use fetch: none to get its rowcount"
                )
            names = _column_names(list(result.keys()))
            if inputs.fetch == "one":
                row = result.one_or_none()
                return None if row is None else _row(names, row)
            return [_row(names, row) for row in result]
    except sa.exc.MultipleResultsFound:
        raise StepFailed("fetch: one, but the query returned more than one row") from None
    finally:
        engine.dispose()


def _column_names(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise StepFailed(
            f"the query returns more than one column named {', '.join(map(repr, repeated))}: "
            "give each an alias (AS ...), so that each row object can hold them all"
        )
    return names


def _row(names: list[str], row: Any) -> dict[str, Any]:
    return {name: _json_ready(value) for name, value in zip(names, row, strict=True)}


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        whole = value.is_finite() and value == value.to_integral_value()
        return int(value) if whole else float(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):  # PostgreSQL arrays
        return [_json_ready(item) for item in value]
    if isinstance(value, dict):  # JSON columns
        return {key: _json_ready(item) for key, item in value.items()}
    return value
