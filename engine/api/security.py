"""The bearer token check, the Host check of a server without a token, and the request body
limit."""

from __future__ import annotations

import hmac
import json
import re
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.config import API_TOKEN_ENV

MAX_BODY_BYTES = 1024 * 1024

_bearer = HTTPBearer(auto_error=False, description="The value of ENGINE_API_TOKEN.")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request bears the server's token (none configured: every request passes).

    Compared in constant time, so response timing tells nothing about the token.
    """
    token: str | None = request.app.state.engine.token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[^\[\]:@/]+)(:[0-9]{1,5})?", re.IGNORECASE)
"""A Host header: a name or a bracketed IPv6 address, then perhaps a port."""


class LoopbackHosts:
    """421 for a request whose Host is not a loopback name or `host`, the address listened on.

    For a server without a token, which listens on loopback only: a web page the user opens
    could still reach it through DNS rebinding (its domain re-resolved to 127.0.0.1), and the
    Host header is what gives it away, as the browser sends the page's domain. 421 Misdirected
    Request (RFC 9110 §15.5.20) says this server does not answer for that name; 403 would say
    this client is forbidden, when the same request sent to `localhost` is answered. Any port
    is accepted (an SSH tunnel or a proxy changes it). `/healthz` answers any Host: it shows
    counts and changes nothing.
    Starlette's TrustedHostMiddleware does not fit: it checks every path and answers 400 in
    plain text.
    """

    def __init__(self, app: ASGIApp, host: str) -> None:
        self.app = app
        served = f"[{host}]" if ":" in host else host
        self.names = {name.lower() for name in (*LOOPBACK_NAMES, served)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            host = Headers(scope=scope).get("host", "")
            found = _HOST.fullmatch(host)
            if found is None or found.group(1).lower() not in self.names:
                detail = (
                    f"this server answers only for {', '.join(sorted(self.names))}, not for "
                    f"Host {host!r}; set {API_TOKEN_ENV} to serve other names"
                )
                await JSONResponse({"detail": detail}, 421)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a request body over `limit` bytes, whether it declares its length or streams."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(send, self.limit)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # An HTTPException passes FastAPI's body parsing as it is and becomes the 413.
                raise HTTPException(413, _too_large_text(self.limit))
            return message

        await self.app(scope, limited, send)


def _too_large_text(limit: int) -> str:
    return f"request body larger than {limit} bytes"


async def _too_large(send: Send, limit: int) -> None:
    body: Any = json.dumps({"detail": _too_large_text(limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
