"""The UI's HTML pages: runs, a run, a step, definitions, a definition, ticks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from engine.cron import CronSchedule
from engine.definition import LoadedDefinition
from engine.served import InstanceId
from engine.status import ENDED, InstanceStatus
from engine.store.browse import BEGINNING
from engine.store.types import utcnow
from engine.ui import rendering
from engine.ui.layout import Topology, layout
from engine.ui.runs import PAGE, picture, timeline
from engine.ui.session import PageSession, sessions
from engine.ui.state import UIState, ui_state
from engine.ui.svg import graph_svg, item_summary

RUNS_PAGE = 50
ITEMS_PAGE = 100
ATTEMPTS_SHOWN = 100
"""A step's page lists its last attempts (up to 1,000 are allowed), the errors of the last
ERRORS_SHOWN with their tracebacks, each cut to `rendering.ERROR_CHARS`: a page stays small."""
ERRORS_SHOWN = 10
NEXT_TICKS = 5
LAST_RUNS = 10
TICKS = 100
NOTICES = {
    "cancel": "Cancel requested.",
    "resume": "Resuming: what did not succeed runs again.",
}
"""What an action redirected back with, by code: never text from the URL itself."""

router = APIRouter(include_in_schema=False)
UI = Annotated[UIState, Depends(ui_state)]
PageNumber = Annotated[int, Query(ge=0, le=1_000_000)]


def status_filter(status: str | None) -> str | None:
    """A status of the filter form; anything else (the blank choice) filters nothing."""
    return status if status in InstanceStatus.__members__ else None


def show(
    request: Request, nonce: str, template: str, code: int = 200, **context: Any
) -> HTMLResponse:
    """`template` with the session's CSRF token and the time now, answered with `code`."""
    csrf = sessions(request).csrf(nonce)
    return rendering.page(request, template, csrf, code=code, now=utcnow(), **context)


@router.get("/", response_class=HTMLResponse)
def runs_list(
    request: Request,
    nonce: PageSession,
    ui: UI,
    definition: str | None = None,
    status: str | None = None,
    page: PageNumber = 0,
) -> HTMLResponse:
    definition = definition or None
    status = status_filter(status)
    views, total = ui.browse.instances(definition, status, page * RUNS_PAGE, RUNS_PAGE)
    known = sorted(set(ui.served.definitions) | ({definition} if definition else set()))
    return show(
        request,
        nonce,
        "runs.html",
        runs=views,
        total=total,
        page=page,
        pages=max(1, -(-total // RUNS_PAGE)),
        definition=definition or "",
        status=status or "",
        statuses=[s.value for s in InstanceStatus],
        definitions=known,
        cursor=(ui.browse.latest_change() or BEGINNING).isoformat(),
    )


@router.get("/ui/runs/{instance_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    nonce: PageSession,
    ui: UI,
    instance_id: InstanceId,
    group: str | None = None,
    page: PageNumber = 0,
    tpage: PageNumber = 0,
    notice: str | None = None,
) -> HTMLResponse:
    run = picture(ui, instance_id)
    lines, total = run.table(group, page)
    timeline_markup, attempts = timeline(ui, run.view, tpage)
    return show(
        request,
        nonce,
        "run.html",
        run=run,
        view=run.view,
        graph=Markup(run.graph()),
        timeline=Markup(timeline_markup),
        lines=lines,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE)),
        tpage=tpage,
        tpages=max(1, -(-attempts // PAGE)),
        group=group or "",
        cursor=run.cursor.isoformat(),
        notice=NOTICES.get(notice or ""),
        item_summary=item_summary,
        params=run.view.params,
    )


@router.get("/ui/runs/{instance_id}/steps/{step}", response_class=HTMLResponse)
def step_page(
    request: Request,
    nonce: PageSession,
    ui: UI,
    instance_id: InstanceId,
    step: str,
    item: str | None = None,
    status: str | None = None,
    page: PageNumber = 0,
) -> HTMLResponse:
    view = ui.browse.instance(instance_id)
    attempts = ui.browse.step_attempts(instance_id, step, item or None, ATTEMPTS_SHOWN)
    counts = ui.served.service.store.item_counts(instance_id).get(step)
    status = status or None
    items = (
        ui.browse.items(instance_id, step, status, page * ITEMS_PAGE, ITEMS_PAGE) if counts else []
    )
    shown = counts.get(status, 0) if counts and status else sum((counts or {}).values())
    return show(
        request,
        nonce,
        "step.html",
        view=view,
        step=step,
        attempts=attempts,
        errors_shown=ERRORS_SHOWN,
        counts=counts,
        summary=item_summary(counts) if counts else "",
        items=items,
        item=item or "",
        status=status or "",
        page=page,
        pages=max(1, -(-shown // ITEMS_PAGE)),
        ended=view.status in ENDED,
    )


@router.get("/ui/definitions", response_class=HTMLResponse)
def definitions_list(request: Request, nonce: PageSession, ui: UI) -> HTMLResponse:
    now = utcnow()
    rows = [
        (loaded, next_ticks(loaded, now, 1), ui.served.service.store.list_instances(name, None, 1))
        for name, loaded in sorted(ui.served.definitions.items())
    ]
    return show(request, nonce, "definitions.html", rows=rows)


def next_ticks(loaded: LoadedDefinition, now: datetime, count: int) -> list[datetime]:
    """The definition's next cron ticks after `now` (none without a cron)."""
    definition = loaded.definition
    if not definition.cron:
        return []
    ticks = CronSchedule(definition.cron, definition.timezone).following(now)
    return [tick for _, tick in zip(range(count), ticks, strict=False)]


def definition_context(ui: UIState, loaded: LoadedDefinition) -> dict[str, Any]:
    """What the definition page shows besides a run form's outcome."""
    now = utcnow()
    topology = Topology.of(loaded.graph)
    drawn = layout(topology, {})
    return {
        "loaded": loaded,
        "definition": loaded.definition,
        "ticks": next_ticks(loaded, now, NEXT_TICKS),
        "last_runs": ui.served.service.store.list_instances(loaded.name, None, LAST_RUNS),
        "graph": Markup(graph_svg(drawn, lambda node: None, {}, topology.mapped)),
        "values": {},
        "errors": [],
        "plan": None,
    }


@router.get("/ui/definitions/{name}", response_class=HTMLResponse)
def definition_page(request: Request, nonce: PageSession, ui: UI, name: str) -> HTMLResponse:
    loaded = ui.served.definition(name)
    return show(request, nonce, "definition.html", **definition_context(ui, loaded))


@router.get("/ui/ticks", response_class=HTMLResponse)
def ticks_page(
    request: Request, nonce: PageSession, ui: UI, definition: str | None = None
) -> HTMLResponse:
    ticks = ui.served.service.store.ticks.recent(definition or None, TICKS)
    return show(
        request,
        nonce,
        "ticks.html",
        ticks=ticks,
        definition=definition or "",
        definitions=sorted(ui.served.definitions),
    )
