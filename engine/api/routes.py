"""The routes of DESIGN §6. Each is a thin call into the service or the store; errors are
mapped to status codes in `engine.api.app`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from engine.api.body import JSON_BODY_RESPONSES, require_json
from engine.api.models import (
    Accepted,
    DefinitionDetail,
    DefinitionSummary,
    Health,
    Message,
    ParamInfo,
    Plan,
    RunAccepted,
    RunRequest,
    SchedulerState,
)
from engine.api.security import require_token
from engine.api.tracebacks import step_without_traceback
from engine.definition import LoadedDefinition
from engine.served import AttemptNumber, InstanceId, LogCursor, ServedState
from engine.service import BatchService
from engine.status import InstanceStatus, Trigger
from engine.store import InstanceView
from engine.store.logs import MAX_PAGE, LogPage
from engine.store.views import instance_json_pieces

public = APIRouter()
router = APIRouter(
    dependencies=[Depends(require_token)],
    responses={401: {"model": Message, "description": "Missing or wrong bearer token."}},
)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Message}}


def served(request: Request) -> ServedState:
    state: ServedState = request.app.state.engine
    return state


State = Annotated[ServedState, Depends(served)]


@public.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The scheduler died or is stuck."}},
    tags=["health"],
)
def healthz(state: State) -> Any:
    """Liveness, without authentication: instances running and waiting in this process, and
    its scheduler. 503 when the scheduler's thread died or completed no round for a minute,
    since every cron of the process has stopped; a failing definition is listed, and the
    others still fire."""
    running, waiting = state.runner.counts()
    health = state.scheduler
    scheduler = None
    if health is not None:
        scheduler = SchedulerState(
            alive=health.alive, last_round=health.last_round, failing=list(health.failing)
        )
    ok = health is None or health.healthy
    body = Health(
        status="ok" if ok else "unhealthy", running=running, waiting=waiting, scheduler=scheduler
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.post(
    "/batch/run",
    status_code=202,
    response_model=RunAccepted,
    responses={
        200: {"model": Plan, "description": "With `dry_run=true`: the plan; nothing runs."},
        **_NOT_FOUND,
        **JSON_BODY_RESPONSES,
    },
    dependencies=[Depends(require_json)],
    tags=["instances"],
)
def run(
    body: RunRequest,
    state: State,
    dry_run: bool = False,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> Any:
    """Create an instance and run it in the background; returns at once.

    A request retried with the same `Idempotency-Key` gets the instance the first one created
    (with `Idempotent-Replayed: true`); the same key with another definition or other params
    is refused (422).
    """
    prepared = BatchService.prepare(state.definition(body.definition), body.params, Trigger.http)
    if dry_run:
        return JSONResponse(prepared.plan())
    if idempotency_key is None:
        instance_id, created = state.service.start(prepared), True
    else:
        instance_id, created = state.service.start_once(prepared, body.params, idempotency_key)
    if created:
        state.runner.launch(prepared, instance_id)
        return RunAccepted(instance_id=instance_id, status=InstanceStatus.pending)
    view = state.service.store.instance_head(instance_id)
    replay = RunAccepted(instance_id=instance_id, status=InstanceStatus(view.status))
    return JSONResponse(
        replay.model_dump(mode="json"), status_code=202, headers={"Idempotent-Replayed": "true"}
    )


@router.get("/batch/instances", response_model=list[InstanceView], tags=["instances"])
def list_instances(
    state: State,
    definition: str | None = None,
    status: InstanceStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 20,
) -> Any:
    """Instances, newest first, without their attempts (as `engine runs list --json`)."""
    views = state.service.store.list_instances(definition, status and status.value, limit)
    return JSONResponse([v.to_json() for v in views])


@router.get(
    "/batch/instances/{instance_id}",
    response_model=InstanceView,
    responses=_NOT_FOUND,
    tags=["instances"],
)
def show_instance(state: State, instance_id: InstanceId) -> Any:
    """One instance with every step attempt (as `engine runs show --json`), each step error
    without its traceback unless the server runs with `ENGINE_API_TRACEBACKS=1`; streamed, so
    that 100,000 item attempts are never held at once."""
    store = state.service.store
    head = store.instance_head(instance_id)  # a 404 before anything is sent
    edit = None if state.tracebacks else step_without_traceback
    pieces = instance_json_pieces(head, store.attempts(instance_id), indent=None, edit=edit)
    return StreamingResponse(pieces, media_type="application/json")


@router.get(
    "/batch/instances/{instance_id}/logs",
    response_model=LogPage,
    responses=_NOT_FOUND,
    tags=["instances"],
)
def instance_logs(
    state: State,
    instance_id: InstanceId,
    step: str | None = None,
    item: str | None = None,
    attempt: AttemptNumber = None,
    after: LogCursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> LogPage:
    """The instance's log lines, oldest first (as `engine logs --json`), a page at a time: pass
    `next` as `after` for the following page. `next` is null once the instance has ended and
    its last line was read; while it runs, `next` is where to ask again."""
    return state.service.store.logs.page(
        instance_id, step=step, item=item, attempt=attempt, after=after, limit=limit
    )


@router.post(
    "/batch/instances/{instance_id}/resume",
    status_code=202,
    response_model=Accepted,
    responses={**_NOT_FOUND, 409: {"model": Message, "description": "Succeeded, or live."}},
    tags=["instances"],
)
def resume(state: State, instance_id: InstanceId) -> Accepted:
    """Take the instance now (409 when it succeeded or a live process runs it), then run
    again, in the background, what did not succeed (as `engine resume`)."""
    taken = state.service.take(instance_id, state.registry)
    state.runner.launch_taken(taken)
    return Accepted(instance_id=instance_id, detail=f"instance {instance_id} resuming")


@router.post(
    "/batch/instances/{instance_id}/cancel",
    response_model=Accepted,
    responses=_NOT_FOUND,
    tags=["instances"],
)
def cancel(state: State, instance_id: InstanceId) -> Accepted:
    """Stop an instance (as `engine cancel`), whichever process runs it; one still waiting
    for a slot in this server never starts."""
    detail = state.service.cancel(instance_id)
    state.runner.cancel(instance_id)
    return Accepted(instance_id=instance_id, detail=detail)


@router.get("/definitions", response_model=list[DefinitionSummary], tags=["definitions"])
def list_definitions(state: State) -> list[DefinitionSummary]:
    """The definitions this server was started with, by name."""
    return [_summary(loaded) for _, loaded in sorted(state.definitions.items())]


@router.get(
    "/definitions/{name}",
    response_model=DefinitionDetail,
    responses=_NOT_FOUND,
    tags=["definitions"],
)
def show_definition(state: State, name: str) -> DefinitionDetail:
    """One definition with its step graph and YAML source."""
    loaded = state.definition(name)
    definition = loaded.definition
    return DefinitionDetail(
        **_summary(loaded).model_dump(exclude={"steps"}),
        catchup=definition.catchup,
        overlap=definition.overlap,
        concurrency=definition.concurrency,
        **loaded.graph.outline(),
        source=loaded.source,
    )


def _summary(loaded: LoadedDefinition) -> DefinitionSummary:
    definition = loaded.definition
    return DefinitionSummary(
        name=loaded.name,
        description=definition.description,
        version=loaded.version,
        file=loaded.file,
        cron=definition.cron,
        timezone=definition.timezone,
        params={
            name: ParamInfo(
                type=p.type.value,
                description=p.description,
                default=p.default,
                required=p.required,
                enum=p.enum,
                secret=p.secret,
            )
            for name, p in definition.params.items()
        },
        steps=[s.id for s in definition.steps],
    )
