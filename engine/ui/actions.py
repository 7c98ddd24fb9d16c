"""What the UI's forms change: cancel, resume, and the run form (a dry run or a run).

Plain HTML forms posting to the server, each carrying the session's CSRF token
(`session.check_post`); a success redirects (303), so that reloading a page never posts again.
They call the service verbs and the background runner as the HTTP API's routes do.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from engine.definition import LoadedDefinition
from engine.definition.models import ParamType
from engine.errors import ParamsError, ResumeRefused
from engine.served import InstanceId
from engine.service import BatchService
from engine.status import Trigger
from engine.ui.pages import UI, definition_context, show
from engine.ui.session import PageSession, check_post, form

FIELD = "p."
"""The prefix of a param's field in the run form."""

router = APIRouter(include_in_schema=False)


@router.post("/ui/runs/{instance_id}/cancel")
async def cancel(request: Request, nonce: PageSession, ui: UI, instance_id: InstanceId) -> Response:
    check_post(request, nonce, await form(request))
    ui.served.service.cancel(instance_id)
    ui.served.runner.cancel(instance_id)
    return RedirectResponse(f"/ui/runs/{instance_id}?notice=cancel", status_code=303)


@router.post("/ui/runs/{instance_id}/resume")
async def resume(request: Request, nonce: PageSession, ui: UI, instance_id: InstanceId) -> Response:
    check_post(request, nonce, await form(request))
    try:
        taken = ui.served.service.take(instance_id, ui.served.registry)
    except ResumeRefused as refused:
        return Response(str(refused), status_code=409, media_type="text/plain")
    ui.served.runner.launch_taken(taken)
    return RedirectResponse(f"/ui/runs/{instance_id}?notice=resume", status_code=303)


def form_params(loaded: LoadedDefinition, fields: dict[str, str]) -> dict[str, Any]:
    """The params a run form gives: a blank field is left out (its default applies); values
    stay text for the params' own validation to convert (`"5"` for an integer, `"true"`, JSON
    for arrays and objects), so the form and the API report the same errors."""
    given: dict[str, Any] = {}
    for name, param in loaded.definition.params.items():
        value = fields.get(FIELD + name, "")
        if value == "":
            continue
        given[name] = value.lower() == "true" if param.type is ParamType.boolean else value
    return given


@router.post("/ui/definitions/{name}/run")
async def run(request: Request, nonce: PageSession, ui: UI, name: str) -> Response:
    fields = await form(request)
    check_post(request, nonce, fields)
    loaded = ui.served.definition(name)
    context = definition_context(ui, loaded)
    context["values"] = {k[len(FIELD) :]: v for k, v in fields.items() if k.startswith(FIELD)}
    try:
        prepared = BatchService.prepare(loaded, form_params(loaded, fields), Trigger.http)
    except ParamsError as error:
        context["errors"] = error.errors
        return show(request, nonce, "definition.html", 422, **context)
    if fields.get("action") == "dry-run":
        context["plan"] = prepared.plan()
        return show(request, nonce, "definition.html", **context)
    instance_id = ui.served.service.start(prepared)
    ui.served.runner.launch(prepared, instance_id)
    return RedirectResponse(f"/ui/runs/{instance_id}", status_code=303)
