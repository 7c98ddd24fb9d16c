"""The small JSON and SVG answers that pages poll while runs progress.

Each feed answers only what changed after the cursor its page sends back (the latest database
timestamp it has seen, see `engine.store.browse`), so that a page of a 10,000-step run polls
kilobytes, not the run. A step the page does not draw as a node of its own (it is inside a
collapsed group) changing, or more changes than one answer holds, tell the page to fetch the
graph again (`graph.svg`, a few hundred nodes at most).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AfterValidator, AwareDatetime

from engine.served import InstanceId, LogCursor
from engine.status import ENDED
from engine.store import InstanceView
from engine.store.browse import BEGINNING, latest
from engine.store.logs import LogLineView, LogPage
from engine.store.types import utcnow
from engine.ui.pages import RUNS_PAGE, UI, PageNumber, status_filter
from engine.ui.rendering import took, when
from engine.ui.runs import picture, timeline
from engine.ui.session import FeedSession
from engine.ui.svg import item_summary

MAX_CHANGED = 300
"""The most step rows one answer of a run's feed holds."""
LOG_PAGE = 500
LOG_PAGE_CHARS = 128 * 1024
"""A page of log lines holds at most this much of their messages, and each shows at most
LOG_LINE_CHARS of its own (a runner may print a megabyte on one line): `engine logs` and the
API's logs route have them whole."""
LOG_LINE_CHARS = 2000

router = APIRouter(include_in_schema=False)
SVG = "image/svg+xml"


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("a time that UTC cannot hold") from None


Cursor = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A feed's cursor: a time with its offset, as the feed gave it (a naive one, or one whose
offset takes it past the calendar, is a 422)."""


def run_cells(view: InstanceView, now: datetime) -> dict[str, Any]:
    """A run's row of the runs list, as the page shows it."""
    return {
        "id": view.id,
        "definition": view.definition,
        "status": view.status,
        "abandoned": view.abandoned,
        "trigger": view.trigger,
        "started": when(view.started_at),
        "duration": took(view.started_at, view.finished_at, now),
    }


@router.get("/ui/feed/runs")
def runs_feed(
    ui: UI,
    nonce: FeedSession,
    since: Cursor,
    definition: str | None = None,
    status: str | None = None,
    settled: bool = False,
    shown: Annotated[str, Query(max_length=2000)] = "",
) -> dict[str, Any]:
    """The runs that changed after `since` (with the list's filters), newest first; and of
    the runs `shown` (`id:status,…`, the page's rows), those whose status or abandonment
    differs from what the page shows: a resume or a lost lease changes no timestamp."""
    since = max(since, BEGINNING)
    views, latest_seen = ui.browse.instances_changed(
        since, definition or None, status_filter(status), RUNS_PAGE, settled
    )
    page: dict[str, str] = {}
    for entry in shown.split(",")[:RUNS_PAGE]:
        key, _, told = entry.partition(":")
        page[key] = told
    ids = [int(key) for key in page if key.isdigit()]
    known = {view.id for view in views}
    views += [
        view
        for view in ui.browse.instances_among(ids)
        if view.id not in known and page[str(view.id)] != _shown_status(view)
    ]
    now = utcnow()
    cursor = max(since, latest_seen or since)
    return {
        "cursor": cursor.isoformat(),
        "settled": cursor == since,
        "runs": [run_cells(view, now) for view in sorted(views, key=lambda v: -v.id)],
    }


def _shown_status(view: InstanceView) -> str:
    """A run's status as the runs list tells it apart: abandoned is a status of its own."""
    return f"{view.status}!" if view.abandoned else view.status


@router.get("/ui/feed/runs/{instance_id}")
def run_feed(
    ui: UI, nonce: FeedSession, instance_id: InstanceId, since: Cursor, settled: bool = False
) -> dict[str, Any]:
    """The run's state, its step rows changed after `since` (each step's latest), and its
    mapped steps' item counts."""
    since = max(since, BEGINNING)
    view = ui.browse.instance(instance_id)
    changed = {row.step: row for row in ui.browse.step_rows(instance_id, since, settled)}
    topology = ui.topology(view.definition, view.version, instance_id)
    counts = (
        ui.served.service.store.item_counts(instance_id) if topology and topology.mapped else {}
    )
    now = utcnow()
    rows = sorted(changed.values(), key=lambda r: r.changed_at)[-MAX_CHANGED:]
    cursor = latest([since, view.started_at, view.finished_at, *(r.changed_at for r in rows)])
    assert cursor is not None
    return {
        "status": view.status,
        "ended": view.status in ENDED,
        "abandoned": view.abandoned,
        "finished": when(view.finished_at),
        "duration": took(view.started_at, view.finished_at, now),
        "cursor": cursor.isoformat(),
        "settled": cursor == since,
        "more": len(changed) > MAX_CHANGED,
        "steps": [
            {
                "step": row.step,
                "status": row.status,
                "attempt": row.attempt,
                "started": when(row.started_at),
                "finished": when(row.finished_at),
                "duration": took(row.started_at, row.finished_at, now),
            }
            for row in rows
        ],
        "items": {step: item_summary(c) for step, c in counts.items()},
    }


@router.get("/ui/runs/{instance_id}/graph.svg")
def graph(ui: UI, nonce: FeedSession, instance_id: InstanceId) -> Response:
    """The run's graph as it is now, for a page to swap in."""
    return Response(picture(ui, instance_id).graph(), media_type=SVG)


@router.get("/ui/runs/{instance_id}/timeline.svg")
def timeline_page(
    ui: UI, nonce: FeedSession, instance_id: InstanceId, tpage: PageNumber = 0
) -> Response:
    svg, _ = timeline(ui, ui.browse.instance(instance_id), tpage)
    return Response(svg, media_type=SVG)


@router.get("/ui/feed/runs/{instance_id}/logs")
def logs(
    ui: UI,
    nonce: FeedSession,
    instance_id: InstanceId,
    step: str | None = None,
    item: str | None = None,
    after: LogCursor = None,
) -> LogPage:
    """A page of the run's log lines after cursor `after`; `next` null once it has ended and
    every line was read."""
    found = ui.served.service.store.logs.page(
        instance_id,
        step=step,
        item=item or None,
        after=after,
        limit=LOG_PAGE,
        max_chars=LOG_PAGE_CHARS,
    )
    return found.model_copy(update={"lines": [_shown(line) for line in found.lines]})


def _shown(line: LogLineView) -> LogLineView:
    cut = len(line.message) - LOG_LINE_CHARS
    if cut <= 0:
        return line
    message = f"{line.message[:LOG_LINE_CHARS]}… [{cut:,} more characters: engine logs has them]"
    return line.model_copy(update={"message": message})
