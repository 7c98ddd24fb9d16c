"""`process`: the transform step of the sales ETL, cleaning orders and totalling them by region."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from engine import StepContext, job_handler


@job_handler("process")
def process(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Drop malformed rows, keep orders of at least `inputs.minAmount` (default 0), total by region.

    A row is malformed when its region is empty or its amount is empty, not a number or negative;
    malformed rows are counted in `dropped`, valid orders under the minimum are not counted at all.
    `count` is the number of orders totalled: 0 sends the run to its `report_empty` branch.
    """
    min_amount = float(inputs.get("minAmount", 0))
    totals: defaultdict[str, float] = defaultdict(float)
    orders: Counter[str] = Counter()
    malformed = []
    for row in inputs["rows"]:
        region, amount = (row.get("region") or "").strip(), _amount(row.get("amount"))
        if not region or amount is None:
            malformed.append(row.get("order_id") or "?")
        elif amount >= min_amount:
            totals[region] += amount
            orders[region] += 1
    if malformed:
        ctx.logger.warning("dropped %d malformed row(s): %s", len(malformed), ", ".join(malformed))
    by_region = [
        {"region": region, "orders": orders[region], "total": round(totals[region], 2)}
        for region in sorted(totals)
    ]
    return {
        "count": orders.total(),
        "dropped": len(malformed),
        "by_region": by_region,
        "total": round(math.fsum(totals.values()), 2),
    }


def _amount(text: str | None) -> float | None:
    """The amount as a number, or None when it is missing, not a finite number, or negative."""
    try:
        amount = float(text or "")
    except ValueError:
        return None
    return amount if math.isfinite(amount) and amount >= 0 else None
