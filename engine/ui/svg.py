"""SVG drawings of the web UI, built as escaped text on the server: a run's graph and its
timeline of attempts.

Every string a run holds passes through `_text` (XML escaping, quotes included), and colours
are CSS classes (`s-<status>`), never inline styles, which the UI's Content-Security-Policy
forbids. Geometry is plain attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from html import escape

from engine.store.browse import StepRow
from engine.ui.layout import Kind, Layout, Node

NODE_WIDTH = 176
NODE_HEIGHT = 46
GAP_X = 28
GAP_Y = 60
PAD = 16
LABEL_CHARS = 24
"""A label longer than this is cut (the node's title keeps it whole)."""

ROW_HEIGHT = 22
LABEL_WIDTH = 200
BAR_WIDTH = 760


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _cut(text: str, chars: int = LABEL_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def item_summary(counts: Mapping[str, int]) -> str:
    """A mapped step's item counts in one line: `90/100 succeeded · 2 failed · 8 running`."""
    total = sum(counts.values())
    parts = [f"{counts.get('succeeded', 0)}/{total} succeeded"]
    parts += [f"{n} {status}" for status, n in sorted(counts.items()) if status != "succeeded"]
    return " · ".join(parts)


def graph_svg(
    drawn: Layout,
    href: Callable[[Node], str | None],
    items: Mapping[str, Mapping[str, int]],
    mapped: frozenset[str],
) -> str:
    """The layout as one `<svg>` element; `href` links a node (None: no link), `items` gives
    the item counts of mapped steps."""
    widths: dict[int, int] = {}
    for node in drawn.nodes:
        widths[node.layer] = max(widths.get(node.layer, 0), node.position + 1)
    widest = max(widths.values(), default=1)
    centre: dict[str, tuple[float, float]] = {}
    for node in drawn.nodes:
        offset = (widest - widths[node.layer]) * (NODE_WIDTH + GAP_X) / 2
        x = PAD + offset + node.position * (NODE_WIDTH + GAP_X)
        y = PAD + node.layer * (NODE_HEIGHT + GAP_Y)
        centre[node.key] = (x + NODE_WIDTH / 2, y + NODE_HEIGHT / 2)
    width = 2 * PAD + widest * (NODE_WIDTH + GAP_X) - GAP_X
    height = 2 * PAD + len(widths) * (NODE_HEIGHT + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" id="graph" width="{width:.0f}"'
        f' height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img"'
        ' aria-label="step graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker></defs>',
    ]
    for link in drawn.links:
        (x1, y1), (x2, y2) = centre[link.source], centre[link.target]
        y1, y2 = y1 + NODE_HEIGHT / 2, y2 - NODE_HEIGHT / 2
        bend = (y2 - y1) / 2
        label = link.label or (f"{link.count} edges" if link.count > 1 else "")
        parts.append(
            f'<path class="edge" marker-end="url(#arrow)" d="M{x1:.0f},{y1:.0f}'
            f' C{x1:.0f},{y1 + bend:.0f} {x2:.0f},{y2 - bend:.0f} {x2:.0f},{y2:.0f}"/>'
        )
        if label:
            parts.append(
                f"<g><title>{_text(label)}</title>"
                f'<text class="edge-label" x="{(x1 + x2) / 2:.0f}" y="{(y1 + y2) / 2:.0f}">'
                f"{_text(_cut(label, 32))}</text></g>"
            )
    for node in drawn.nodes:
        parts.append(_node(node, centre[node.key], href(node), items, mapped))
    parts.append("</svg>")
    return "".join(parts)


def _node(
    node: Node,
    centre: tuple[float, float],
    href: str | None,
    items: Mapping[str, Mapping[str, int]],
    mapped: frozenset[str],
) -> str:
    x, y = centre[0] - NODE_WIDTH / 2, centre[1] - NODE_HEIGHT / 2
    first, last = node.members[0], node.members[-1]
    if node.kind is Kind.step:
        title = f"{first}: {node.status}"
        lines = [_cut(first)]
        if first in mapped:
            counts = items.get(first)
            summary = item_summary(counts) if counts else "map: no items yet"
            lines.append(_cut(summary, 34))
            title += f" ({summary})"
    elif node.kind is Kind.group:
        title = f"{len(node.members)} {node.status} steps: {first} … {last}"
        lines = [f"{len(node.members)} steps ({node.status})", _cut(f"{first} … {last}", 34)]
    else:
        title = f"{len(node.members)} more steps, not drawn"
        lines = [f"{len(node.members)} more steps", "see the step table"]
    data = f' data-step="{_text(first)}"' if node.kind is Kind.step else ""
    classes = f"node s-{_text(node.status)} k-{node.kind.value}"
    if first in mapped and node.kind is Kind.step:
        classes += " mapped"
    body = [
        f'<g class="{classes}"{data}><title>{_text(title)}</title>',
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6"/>',
    ]
    top = centre[1] - (len(lines) - 1) * 8 + 4
    for i, line in enumerate(lines):
        cls = "label" if i == 0 else "sub"
        body.append(
            f'<text class="{cls}" x="{centre[0]:.0f}" y="{top + i * 16:.0f}">{_text(line)}</text>'
        )
    body.append("</g>")
    inner = "".join(body)
    return f'<a href="{_text(href)}">{inner}</a>' if href else inner


def timeline_svg(rows: list[StepRow], start: datetime | None, end: datetime) -> str:
    """One bar per attempt, from `start` (the run's start) to `end` (its end, or now)."""
    starts = [r.started_at for r in rows if r.started_at is not None]
    origin = start or min(starts, default=end)
    span = max((end - origin).total_seconds(), 0.001)
    width = LABEL_WIDTH + BAR_WIDTH + 4 * PAD
    height = PAD * 2 + (len(rows) + 1) * ROW_HEIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" id="timeline"'
        f' width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"'
        ' aria-label="timeline of attempts">'
    ]
    for i in range(5):
        x = PAD + LABEL_WIDTH + BAR_WIDTH * i / 4
        parts.append(
            f'<line class="tick" x1="{x:.0f}" y1="{PAD}" x2="{x:.0f}" y2="{height - PAD}"/>'
            f'<text class="tick-label" x="{x:.0f}" y="{PAD + 12}">'
            f"{_text(duration(span * i / 4))}</text>"
        )
    for i, row in enumerate(rows):
        y = PAD + (i + 1) * ROW_HEIGHT
        began = row.started_at or end
        finished = row.finished_at or end
        x = PAD + LABEL_WIDTH + BAR_WIDTH * (began - origin).total_seconds() / span
        bar = max(BAR_WIDTH * (finished - began).total_seconds() / span, 2)
        name = row.step if row.attempt == 1 else f"{row.step} #{row.attempt}"
        took = duration((finished - began).total_seconds())
        parts.append(
            f'<g class="bar s-{_text(row.status)}"><title>{_text(name)}: {_text(row.status)},'
            f" {_text(took)}</title>"
            f'<text class="row-label" x="{PAD}" y="{y + 15}">{_text(_cut(name, 28))}</text>'
            f'<rect x="{x:.1f}" y="{y + 3}" width="{bar:.1f}" height="{ROW_HEIGHT - 6}" rx="2"/>'
            "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def duration(seconds: float) -> str:
    """`850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
