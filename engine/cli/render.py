"""Human output on stderr: live step progress and summary tables (rich, imported only here).

User data (errors, results, params, log lines) is never read as Rich markup: both consoles have
markup and emoji codes off, styles are applied as `Text` spans, and every user string goes
through `shown`, which makes control characters visible (an escape sequence in a runner's error
cannot drive the terminal) and cuts it to a bound, so that printing is linear in what is shown
and cannot fail an instance however large or odd the text.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.dispatch.base import LogLine
from engine.execution import LogEvent, StepEvent
from engine.status import StepStatus
from engine.store import InstanceView
from engine.store.logs import LogLineView
from engine.store.ticks import TickView
from engine.store.views import StepAttemptView

ItemCounts = dict[str, dict[str, int]]
"""By mapped step, how many of its items ended in each status."""

_MARKS = {
    StepStatus.running: ("▶", "cyan"),
    StepStatus.succeeded: ("✓", "green"),
    StepStatus.failed: ("✗", "red"),
    StepStatus.skipped: ("↷", "dim"),
    StepStatus.cancelled: ("■", "yellow"),
}
_STYLES = {
    "succeeded": "green",
    "failed": "red",
    "skipped": "dim",
    "claimed": "dim",
    "cancelled": "yellow",
    "running": "cyan",
    "pending": "cyan",
}

console = Console(stderr=True, highlight=False, markup=False, emoji=False)
"""Progress and run summaries: stderr, so that `--json` output alone is on stdout."""
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
"""What a command was asked to show: lists, details, plans."""

SHOWN_CHARS = 300
"""How much of one error or result a table cell or progress line shows (`--json` has it all)."""
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if chr(c) not in "\n\t"}


def shown(value: str | None, limit: int = SHOWN_CHARS) -> str:
    """`value` fit for a terminal: control characters visible, at most `limit` characters."""
    value = value or ""
    text = value[:limit].translate(_CONTROL)
    if len(value) > limit:
        text += f"… ({len(value) - limit:,} more characters)"
    return text


def _step_name(step: str, item: str | None) -> str:
    """The step, and for an item of a mapped step its key: `step[key]`."""
    return step if item is None else f"{step}[{shown(item, 80)}]"


_last_clock = (0.0, "")


def _clock(at: datetime) -> str:
    """`at` as local `HH:MM:SS`; the last one is kept, as a runner says many lines a second."""
    global _last_clock
    second = at.timestamp() // 1
    if _last_clock[0] != second:
        _last_clock = (second, at.astimezone().strftime("%H:%M:%S"))
    return _last_clock[1]


def log_line(step: str, item: str | None, attempt: int, line: LogLine) -> str:
    """`12:41:46   load info: wrote 4 rows`: a runner's line, tagged with its step (`load#2`
    for a later attempt, `load[eu]` for an item), ready to write as it is.

    Plain text, not Rich: a runner may print a million lines, and Rich's layout of one costs
    a hundred times the write (`shown` still makes control characters visible)."""
    clock = _clock(line.at)
    source = line.level if line.stream == "log" else line.stream
    name = _step_name(step, item) + (f"#{attempt}" if attempt > 1 else "")
    return f"{clock}   {name} {source}: {shown(line.message, 2000)}\n"


def stored_line(line: LogLineView) -> str:
    """A line of `engine logs`."""
    said = LogLine(line.at, line.level, line.stream, line.message)
    return log_line(line.step, line.item, line.attempt, said)


class Progress:
    """Prints one line per step event and per log line as it happens; of a mapped step's
    items, only the failures (100,000 items must not print 200,000 lines)."""

    def __init__(self) -> None:
        self._started: dict[str, datetime] = {}
        self._items: dict[str, int] = {}

    def __call__(self, event: StepEvent | LogEvent) -> None:
        if isinstance(event, LogEvent):
            step, item, attempt = event.step, event.item, event.attempt
            console.file.write("".join(log_line(step, item, attempt, ln) for ln in event.lines))
            return
        if event.item is not None and event.status is not StepStatus.failed:
            return
        clock = event.at.astimezone().strftime("%H:%M:%S")
        name = _step_name(event.step, event.item)
        line = Text.assemble(f"{clock} ", _MARKS[event.status], f" {name}")
        if event.status is StepStatus.running:
            self._started[event.step] = event.at
            if event.items is not None:
                self._items[event.step] = event.items
                line.append(f" ({event.items:,} items)", "dim")
            if event.attempt > 1:
                line.append(f" (attempt {event.attempt})", "dim")
        elif event.item is not None:
            line.append(f" failed (attempt {event.attempt}): {first_line(event.error)}")
            if event.retry_in is not None:
                line.append(f" (retry in {event.retry_in:g}s)", "yellow")
        else:
            started = self._started.get(event.step, event.at)
            line.append(
                f" {event.status.value} in {(event.at - started).total_seconds():.2f}s"
                if event.status is not StepStatus.skipped
                else " skipped"
            )
            if event.step in self._items:
                line.append(f" ({self._items.pop(event.step):,} items)", "dim")
            if event.error:
                line.append(f": {first_line(event.error)}")
            if event.retry_in is not None:
                line.append(f" (retry in {event.retry_in:g}s)", "yellow")
        console.print(line, soft_wrap=True)


def first_line(text: str | None) -> str:
    """The first non-blank line of an error, as `shown`: the message without its traceback."""
    head = (text or "")[: 4 * SHOWN_CHARS].strip()
    return shown(head.splitlines()[0] if head else "")


def _duration(start: datetime | None, end: datetime | None) -> str:
    return f"{(end - start).total_seconds():.2f}s" if start and end and end > start else "-"


def _status(view: InstanceView) -> Text:
    """The status, marked when the process running the instance is gone."""
    if view.abandoned:
        return Text("running (abandoned)", "red")
    return styled(view.status)


def styled(status: str) -> Text:
    return Text(status, _STYLES.get(status, "white"))


def _brief(value: Any, width: int = 40) -> str:
    import json

    text = json.dumps(value, default=str)
    return shown(text if len(text) <= width else text[: width - 1] + "…")


def _item_counts(counts: dict[str, int]) -> str:
    """`3 items: 2 succeeded, 1 failed`."""
    by_status = ", ".join(f"{n:,} {status}" for status, n in sorted(counts.items()))
    return f"{sum(counts.values()):,} items: {by_status}"


def _detail(attempt: StepAttemptView, counts: ItemCounts, latest: bool = True) -> str:
    """A row's last column: the error or the result; a mapped step's item counts instead of its
    result (the list of its items' results, which `--items` and `--json` show), on its `latest`
    row: the counts are of each item's last attempt, so an earlier row of a resumed step would
    claim items that succeeded only later."""
    mapped = attempt.item is None and attempt.step in counts
    parts = [_item_counts(counts[attempt.step])] if mapped and latest else []
    if attempt.error:
        parts.append(first_line(attempt.error))
    elif attempt.result is not None and not mapped:  # a mapped step's: its items' results
        parts.append(_brief(attempt.result))
    return " · ".join(parts)


def instance_summary(view: InstanceView, counts: ItemCounts) -> None:
    """The steps of an instance (last attempt of each) and its end, as a table; a mapped step
    is one row, with its item counts."""
    last: dict[str, Any] = {}
    for attempt in view.steps or []:
        last[attempt.step] = attempt
    table = Table(
        title=Text.assemble(f"instance {view.id} · {view.definition} · ", styled(view.status)),
        title_justify="left",
    )
    for column in ("step", "status", "attempts", "duration"):
        table.add_column(column, no_wrap=True)
    table.add_column("result / error", overflow="fold")
    for step, attempt in last.items():
        table.add_row(
            step,
            styled(attempt.status),
            "-" if attempt.status == StepStatus.skipped else str(attempt.attempt),
            _duration(attempt.started_at, attempt.finished_at),
            _detail(attempt, counts),
        )
    console.print(table)
    took = _duration(view.started_at, view.finished_at)
    console.print(
        Text.assemble(
            f"instance {view.id} ",
            styled(view.status),
            f" in {took}",
            f": {first_line(view.error)}" if view.error else "",
        )
    )


def instance_detail(view: InstanceView, counts: ItemCounts) -> None:
    """Every attempt of an instance's steps (of items too, if `view` holds them: `runs show
    --items` lists those with `item_attempts`, which a table of 100,000 rows would not)."""
    out.print(
        Text.assemble(
            f"instance {view.id} · {view.definition} ({view.version[:12]}) · ",
            _status(view),
            f" · trigger {view.trigger}",
        )
    )
    out.print(f"params: {_brief(view.params, 200)}")
    if view.scheduled_for:
        out.print(f"scheduled for: {view.scheduled_for.isoformat()}")
    out.print(
        f"started {view.started_at.isoformat() if view.started_at else '-'}, "
        f"finished {view.finished_at.isoformat() if view.finished_at else '-'}"
    )
    if view.error:
        out.print(f"error: {shown(view.error, 4000)}")
    table = Table()
    for column in ("step", "attempt", "status", "started", "duration"):
        table.add_column(column, no_wrap=True)
    table.add_column("result / error", overflow="fold")
    last = {a.step: a.attempt for a in view.steps or [] if a.item is None}
    for a in view.steps or []:
        started = a.started_at.astimezone().strftime("%H:%M:%S") if a.started_at else "-"
        table.add_row(
            _step_name(a.step, a.item),
            str(a.attempt),
            styled(a.status),
            started,
            _duration(a.started_at, a.finished_at),
            _detail(a, counts, a.attempt == last.get(a.step)),
        )
    out.print(table)


ITEM_LINES = 1000
"""Item attempts written at once by `item_attempts`."""


def item_attempts(attempts: Iterable[StepAttemptView]) -> None:
    """Each of `attempts` (those of items), a line each in the order they started, written as
    they are read: plain columns, as a table of 100,000 rows would take rich most of a minute.
    The item (`step[key]`, of any width) comes after the columns of fixed width."""
    text = Text()
    for lines, a in enumerate(attempts, 1):
        if lines == 1:
            text.append("\nattempt  status     started   duration  item  result / error\n", "bold")
        started = a.started_at.astimezone().strftime("%H:%M:%S") if a.started_at else "-"
        text.append(f"{a.attempt:>7}  ")
        text.append(f"{a.status:<9}", _STYLES.get(a.status, "white"))
        text.append(f"  {started:<8}  {_duration(a.started_at, a.finished_at):>8}  ")
        text.append(f"{_step_name(a.step, a.item)}  {_detail(a, {})}\n")
        if lines % ITEM_LINES == 0:
            out.print(text, end="")
            text = Text()
    out.print(text, end="")


def instance_list(views: list[InstanceView]) -> None:
    table = Table()
    for column in ("id", "definition", "status", "trigger", "started", "duration"):
        table.add_column(column)
    for v in views:
        started = v.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if v.started_at else "-"
        table.add_row(
            str(v.id),
            v.definition,
            _status(v),
            v.trigger,
            started,
            _duration(v.started_at, v.finished_at),
        )
    out.print(table)


def plan(data: dict[str, Any]) -> None:
    out.print(f"plan of {data['definition']} ({data['version'][:12]}), nothing will run")
    out.print(f"params: {_brief(data['params'], 200)}")
    table = Table()
    for column in ("#", "step", "runner", "after", "join", "condition"):
        table.add_column(column)
    for i, step in enumerate(data["steps"], 1):
        table.add_row(
            str(i),
            step["step"] + (" (map)" if step.get("map") else ""),
            step["runner"],
            ", ".join(step["upstream"]) or "-",
            step["join"] if len(step["upstream"]) > 1 else "",
            shown(step["condition"] or ""),
        )
    out.print(table)
    for edge in data["edges"]:
        extra = "" if edge["on"] == "success" else f" on {edge['on']}"
        extra += f" if {shown(edge['condition'])}" if edge["condition"] else ""
        out.print(f"  {edge['from']} → {edge['to']}{extra}")


def tick_list(claims: list[TickView]) -> None:
    table = Table()
    for column in ("definition", "tick", "trigger", "instance", "outcome"):
        table.add_column(column)
    for c in claims:
        table.add_row(
            c.definition,
            c.scheduled_for.isoformat(),
            c.trigger,
            str(c.instance_id or "-"),
            styled(c.status)
            if c.status
            else Text.assemble(("skipped", "yellow"), f": {shown(c.skipped_reason)}"),
        )
    out.print(table)
