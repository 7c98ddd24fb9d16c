"""`load`: the load step of the sales ETL, writing a day's totals by region into SQLite."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from engine import StepContext, job_handler

TABLE = "daily_sales"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    day TEXT NOT NULL,
    region TEXT NOT NULL,
    orders INTEGER NOT NULL,
    total REAL NOT NULL,
    PRIMARY KEY (day, region)
)
"""


@job_handler("load")
def load(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Write `inputs.by_region` as the rows of `inputs.day` into the SQLite file `inputs.database`.

    Idempotent: the day's rows are replaced in one transaction, so a rerun leaves no duplicates,
    nor regions of an earlier load that no longer pass (say, after a rerun with a higher minAmount).
    """
    database = Path(inputs["database"])
    day = inputs["day"]
    rows = [(day, r["region"], r["orders"], r["total"]) for r in inputs["by_region"]]
    database.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(SCHEMA)
        conn.execute(f"DELETE FROM {TABLE} WHERE day = ?", (day,))
        conn.executemany(
            f"INSERT INTO {TABLE} (day, region, orders, total) VALUES (?, ?, ?, ?)", rows
        )
    ctx.logger.info("wrote %d rows of %s into %s", len(rows), day, database)
    return {"table": TABLE, "rows_written": len(rows), "database": str(database)}
