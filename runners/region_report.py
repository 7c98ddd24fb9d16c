"""`region_report`: one item of the regional reports' mapped step, a report file per region."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine import StepContext, job_handler


@job_handler("region_report")
def region_report(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Write `inputs.region` (one entry of `process`'s `by_region`) as JSON to `inputs.path`.

    It runs once per region; `ctx.item_key` is the region's name, the key of its item. Writing the
    whole file each time makes a retried or resumed item leave the same file behind.
    """
    region, path = inputs["region"], Path(inputs["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"day": inputs["day"], **region}
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    ctx.logger.info("region %s: %d orders, %.2f", ctx.item_key, region["orders"], region["total"])
    return {"region": region["region"], "report": str(path), "total": region["total"]}
