"""`collect`: the extract step of the sales ETL, reading one day of orders from a CSV file."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

from engine import StepContext, job_handler

COLUMNS = ("order_id", "day", "region", "product", "amount")


@job_handler("collect")
def collect(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Read the CSV `inputs.source` (relative to the working directory), keep `inputs.day`'s rows.

    Rows are returned as read, as strings: judging them is `process`'s job, so that it can count
    the malformed ones it drops.

    Raises:
        FileNotFoundError: the source file does not exist.
        ValueError: `day` is not a YYYY-MM-DD date, or the file lacks one of `COLUMNS`.
    """
    source = Path(inputs["source"])
    day = _checked_day(inputs["day"])
    if not source.is_file():
        raise FileNotFoundError(f"sales file {source} not found in {Path.cwd()}")
    with source.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{source} lacks the column(s) {', '.join(missing)}")
        rows = [row for row in reader if row["day"] == day]
    ctx.logger.info("collected %d rows of %s from %s", len(rows), day, source)
    return {"count": len(rows), "source": str(source), "rows": rows}


def _checked_day(text: str) -> str:
    """`text` if it is a YYYY-MM-DD date; it also ends up in report file names downstream."""
    try:
        valid = date.fromisoformat(text).isoformat() == text
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"day {text!r} is not a YYYY-MM-DD date")
    return text
