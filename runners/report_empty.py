"""`report_empty`: the sales ETL's branch for a day where no order passed; it records why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine import StepContext, job_handler


@job_handler("report_empty")
def report_empty(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Write a JSON report to `inputs.path` saying that nothing of `inputs.day` was loaded, and why.

    Inputs `collected` and `dropped` are the row counts of `collect` and `process`; `minAmount` is
    the threshold the remaining valid orders all fell under.
    """
    day, collected, dropped = inputs["day"], inputs["collected"], inputs["dropped"]
    if collected == 0:
        reason = f"no orders for {day} in the source"
    elif dropped == collected:
        reason = f"all {collected} orders were malformed"
    else:
        valid, minimum = collected - dropped, inputs["minAmount"]
        reason = f"none of the {valid} valid orders reached minAmount {minimum:,.2f}"
    path = Path(inputs["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"day": day, "loaded": False, "reason": reason, "collected": collected,
              "dropped": dropped, "minAmount": inputs["minAmount"]}
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    ctx.logger.info("nothing loaded for %s: %s", day, reason)
    return {"report": str(path), "reason": reason}
