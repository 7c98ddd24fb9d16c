"""`notify`: the sales ETL's last step, summing up whichever branch the run took."""

from __future__ import annotations

from typing import Any

from engine import StepContext, job_handler


@job_handler("notify")
def notify(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Summarise the run from the results of the steps before it: `alert`, `load`, `report_empty`.

    It joins on any of them, so exactly the branch that ran has a result; the others have None.
    """
    day = ctx.params["day"]
    alerted, loaded = ctx.results.get("alert"), ctx.results.get("load")
    if alerted:
        outcome, summary = "failed", f"{day}: step {alerted['failed_step']} failed"
    elif loaded:
        outcome = "loaded"
        summary = f"{day}: loaded {loaded['rows_written']} regions into {loaded['table']}"
    else:
        outcome = "empty"
        summary = f"{day}: nothing loaded, {ctx.results['report_empty']['reason']}"
    ctx.logger.info(summary)
    return {"summary": summary, "outcome": outcome}
