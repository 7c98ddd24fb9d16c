"""The FastAPI application: its state, its lifespan, and the mapping of engine errors to HTTP
status codes, in one place (as `engine.cli` maps them to exit codes)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from engine.api import metrics
from engine.api.body import invalid_request
from engine.api.routes import public, router
from engine.api.security import BodyLimit, LoopbackHosts, require_token
from engine.background import BackgroundRunner
from engine.definition import LoadedDefinition
from engine.errors import (
    DefinitionError,
    DefinitionNotFound,
    EngineError,
    IdempotencyKeyReused,
    InstanceNotFound,
    ParamsError,
    ResumeRefused,
)
from engine.health import SchedulerHealth
from engine.recovery import recovering
from engine.registry import JobRegistry
from engine.served import ServedState
from engine.service import BatchService
from engine.ui import include_ui

log = logging.getLogger(__name__)

SchedulerLoop = Callable[[BackgroundRunner, threading.Event, SchedulerHealth], None]
"""Runs the cron scheduler until the event is set, launching instances on the runner and
reporting each round to the health (which `/healthz` reads)."""


def create_app(
    service: BatchService,
    definitions: dict[str, LoadedDefinition],
    registry: JobRegistry,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    tracebacks: bool = False,
    max_instances: int = 4,
    grace: float = 30.0,
    scheduler: SchedulerLoop | None = None,
    recover: bool = False,
) -> FastAPI:
    """The API over `service` for `definitions`.

    Starting the application starts `max_instances` background slots and `scheduler` in a
    thread, and with `recover` the adoption of orphaned instances (`engine.recovery`); stopping
    it stops both, then lets running instances finish within `grace` seconds (see
    `BackgroundRunner.stop`).

    Without `token`, only requests addressed to a loopback name or to `host` are answered
    (see `LoopbackHosts`). Step errors lose their tracebacks unless `tracebacks`.
    """
    state = ServedState(service, definitions, registry, token, tracebacks)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state._runner = BackgroundRunner(service, max_instances)
        stop = threading.Event()
        thread = None
        if scheduler is not None:
            state.scheduler = SchedulerHealth()
            thread = threading.Thread(
                target=scheduler,
                args=(state.runner, stop, state.scheduler),
                name="engine-scheduler",
            )
            state.scheduler.thread = thread
            thread.start()
        try:
            with recovering(state.runner, registry, recover):
                yield
        finally:
            stop.set()
            if thread is not None:
                await asyncio.to_thread(thread.join)
            await asyncio.to_thread(state.runner.stop, grace)

    app = FastAPI(
        title="engine",
        summary="Trigger, follow, resume and cancel batch instances.",
        version="1",
        lifespan=lifespan,
        openapi_url=None,  # served below, behind the token like every route but /healthz
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = state
    app.add_middleware(BodyLimit)
    if token is None:
        app.add_middleware(LoopbackHosts, host=host)
    app.include_router(public)
    app.include_router(router)
    app.include_router(metrics.router)
    if token is None:
        app.openapi = _without_security(app)  # type: ignore[method-assign]
    _serve_docs(app)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for error, status in _STATUS.items():
        app.add_exception_handler(error, _handler(status))
    include_ui(app)
    return app


def _serve_docs(app: FastAPI) -> None:
    """`/openapi.json` and the Swagger UI at `/docs`. With a token they need it too: the
    schema is fetched with the header, and the UI is for servers without one."""
    guarded = [Depends(require_token)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="engine API")


def _without_security(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The schema of a server without a token: no route needs one, so none says it does."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.get("components", {}).pop("securitySchemes", None)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
                    operation["responses"].pop("401", None)
        return app.openapi_schema  # type: ignore[return-value]

    return openapi


_STATUS: dict[type[EngineError], int] = {
    DefinitionNotFound: 404,
    InstanceNotFound: 404,
    ResumeRefused: 409,
    DefinitionError: 409,  # a resumed instance's stored version no longer loads
    ParamsError: 422,
    IdempotencyKeyReused: 422,
    EngineError: 500,
}


def _handler(status: int) -> Callable[[Request, Exception], JSONResponse]:
    def handle(request: Request, error: Exception) -> JSONResponse:
        if status == 500:
            log.error("%s %s: %s", request.method, request.url.path, error)
        if isinstance(error, ParamsError):
            # FastAPI's own 422 shape, so that a client reads every 422 alike; `msg` is in the
            # CLI's words.
            details = [
                {"loc": ["body", "params"], "msg": e, "type": "params"} for e in error.errors
            ]
            return JSONResponse({"detail": details}, status_code=status)
        if isinstance(error, IdempotencyKeyReused):
            details = [
                {"loc": ["header", "idempotency-key"], "msg": str(error), "type": "idempotency"}
            ]
            return JSONResponse({"detail": details}, status_code=status)
        return JSONResponse({"detail": str(error)}, status_code=status)

    return handle
