"""`alert`: the sales ETL's failure handler. It only logs, so that it works with no network; a
real deployment would page or post to a chat here."""

from __future__ import annotations

from typing import Any

from engine import StepContext, job_handler


@job_handler("alert")
def alert(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Log a warning naming the failed step.

    A runner sees its upstream results but not their statuses, so `inputs.statuses` maps the
    watched step ids to `{{ steps.<id>.status }}`; the first one that failed is reported.
    """
    failed_step = next(step for step, status in inputs["statuses"].items() if status == "failed")
    ctx.logger.warning(
        "ALERT: instance %s failed at step %r (day %s); see `engine runs show %s`",
        ctx.instance_id, failed_step, ctx.params.get("day"), ctx.instance_id,
    )
    return {"alerted": True, "failed_step": failed_step}
