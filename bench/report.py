"""What the benchmarks share on the command line: comma-separated sizes in, plain tables out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Column = tuple[str, Callable[[Any], str]]
"""A column's heading, and how to print one row's cell."""


def ints(text: str) -> list[int]:
    """An argparse type: `1000,10000` -> [1000, 10000]."""
    return [int(x) for x in text.split(",") if x.strip()]


def table(columns: list[Column], rows: Sequence[Any]) -> str:
    """Aligned columns: the first to the left, the figures to the right."""
    cells = [[head for head, _ in columns]] + [[cell(r) for _, cell in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    cells.insert(1, ["-" * w for w in widths])
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    )
