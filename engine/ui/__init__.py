"""The web UI of `engine serve`: server-rendered pages (Jinja2), a little plain JavaScript that
polls small feeds, and CSS, all shipped in the package (no Node.js, no CDN).

Imported only by `engine.api.app`, so that the other commands never load it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import DefinitionNotFound, InstanceNotFound
from engine.served import ServedState
from engine.store.browse import Browse
from engine.ui import actions, feeds, pages, session
from engine.ui.rendering import page
from engine.ui.session import LoginRequired, Sessions, login_redirect
from engine.ui.state import UIState

STATIC = Path(__file__).parent / "static"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def is_ui_path(path: str) -> bool:
    return path in ("/", "/login", "/logout") or path.startswith("/ui/")


class UIHeaders:
    """The Content-Security-Policy (no inline script or style anywhere: whatever a page shows
    can never run), nosniff and the referrer policy on every UI response; pages and feeds are
    not cached, as they show a session's view of live runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_ui_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/ui/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = HEADERS if static else [*HEADERS, (b"cache-control", b"no-store")]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def include_ui(app: FastAPI) -> None:
    """Serve the UI from `app`, whose `state.engine` is the API's `ServedState`."""
    served: ServedState = app.state.engine
    app.state.ui = UIState(served, Sessions(served.token), Browse(served.service.store.engine))
    app.add_middleware(UIHeaders)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    for module in (session, pages, actions, feeds):
        app.include_router(module.router)

    async def login_required(request: Request, error: Exception) -> Response:
        return login_redirect(request)

    app.add_exception_handler(LoginRequired, login_required)
    for missing in (InstanceNotFound, DefinitionNotFound):
        app.add_exception_handler(missing, _not_found_page(app.exception_handlers[missing]))


def _not_found_page(api: Callable[[Request, Exception], Any]) -> Callable[..., Any]:
    """An unknown run or definition: a page on the UI's paths, the API's answer elsewhere."""

    async def handle(request: Request, error: Exception) -> Response:
        if not is_ui_path(request.url.path):
            answer: Response = api(request, error)
            return answer
        nonce = request.app.state.ui.sessions.nonce(request.cookies.get(session.COOKIE))
        if nonce is None:
            return login_redirect(request)
        csrf = request.app.state.ui.sessions.csrf(nonce)
        return page(request, "missing.html", csrf, code=404, message=str(error))

    return handle


__all__ = ["include_ui"]
