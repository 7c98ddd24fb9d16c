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
    """421 for a request whose Host is not a loopback name or `host`, the address listened on;
    403 for one sent by a page of another origin.

    For a server without a token, which listens on loopback only: a web page the user opens
    could still reach it through DNS rebinding (its domain re-resolved to 127.0.0.1), and the
    Host header is what gives it away, as the browser sends the page's domain. 421 Misdirected
    Request (RFC 9110 §15.5.20) says this server does not answer for that name; 403 would say
    this client is forbidden, when the same request sent to `localhost` is answered. Any port
    is accepted (an SSH tunnel or a proxy changes it). A page may also post to
    `http://127.0.0.1:8000` itself (cross-site request forgery: a cancel or a resume needs no
    body, so no preflight); its browser then sends an `Origin` that is not a loopback name, and
    that client is forbidden (403). A request without `Origin` is not from a page of another
    site. `/healthz` answers any Host: it shows counts and changes nothing.
    Starlette's TrustedHostMiddleware does not fit: it checks every path and answers 400 in
    plain text.
    """

    def __init__(self, app: ASGIApp, host: str) -> None:
        self.app = app
        served = f"[{host}]" if ":" in host else host
        self.names = {name.lower() for name in (*LOOPBACK_NAMES, served)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            refusal = self._refusal(Headers(scope=scope))
            if refusal is not None:
                status, text = refusal
                detail = f"{text}; set {API_TOKEN_ENV} to serve other names"
                await JSONResponse({"detail": detail}, status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: Headers) -> tuple[int, str] | None:
        names = ", ".join(sorted(self.names))
        host = headers.get("host", "")
        if not self._served(host):
            return 421, f"this server answers only for {names}, not for Host {host!r}"
        origin = headers.get("origin")
        if origin is not None and not self._served(origin.partition("://")[2]):
            return 403, f"refused for a page of {origin!r}: only pages of {names} are answered"
        return None

    def _served(self, netloc: str) -> bool:
        found = _HOST.fullmatch(netloc)
        return found is not None and found.group(1).lower() in self.names


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
