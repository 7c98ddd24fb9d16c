"""Sessions of the web UI: the login page, the signed session cookie and CSRF tokens.

A session is a cookie `<issued>.<nonce>.<mac>`: the time it was issued, a random nonce, and an
HMAC-SHA256 of both keyed by `ENGINE_API_TOKEN`. Nothing is stored on the server, so a restart
or another replica with the same token accepts it, and changing the token ends every session.
It expires after `SESSION_SECONDS`. The CSRF token of a session is an HMAC of its nonce; a
server without a token (loopback only, no login) signs a fixed text with a random key of its
own process instead. A POST carries it in the `csrf` form field or the `X-CSRF-Token` header,
and one whose `Origin` is another site's is refused whatever it carries.

The bearer-token API (`/batch/*`, `/definitions`) never reads this cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Annotated
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from engine.ui.rendering import page

COOKIE = "engine_session"
SESSION_SECONDS = 12 * 3600
CLOCK_SKEW = 60
"""How far in the future an issue time may lie (replicas' clocks differ a little)."""
ANONYMOUS = "anonymous"
"""The session of every request to a server without a token."""
LOGIN = "login"
"""What the login form's CSRF token signs: before the login there is no session."""


class LoginRequired(Exception):
    """A page was asked for without a valid session: the answer is the login page."""


class Sessions:
    """Issues and checks session cookies and CSRF tokens for one server."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._key = token.encode() if token else secrets.token_bytes(32)

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self._key, f"{purpose}:{text}".encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        payload = f"{int(time.time() if now is None else now)}.{secrets.token_hex(16)}"
        return f"{payload}.{self._mac('session', payload)}"

    def nonce(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session's nonce when `cookie` is one this server issued and it has not expired."""
        if self.token is None:
            return ANONYMOUS
        issued, _, rest = (cookie or "").partition(".")
        nonce, _, mac = rest.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(
            mac.encode(), self._mac("session", f"{issued}.{nonce}").encode()
        ):
            return None
        age = (time.time() if now is None else now) - int(issued)
        return nonce if -CLOCK_SKEW <= age <= SESSION_SECONDS else None

    def csrf(self, nonce: str) -> str:
        return self._mac("csrf", nonce)

    def check_token(self, given: str) -> bool:
        """The login's token compared with the server's in constant time."""
        assert self.token is not None
        return hmac.compare_digest(given.encode(), self.token.encode())


def sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.ui.sessions
    return found


def page_session(request: Request) -> str:
    """A page's session nonce; without one, LoginRequired (answered with a redirect)."""
    nonce = sessions(request).nonce(request.cookies.get(COOKIE))
    if nonce is None:
        raise LoginRequired
    return nonce


def feed_session(request: Request) -> str:
    """A UI JSON endpoint's session nonce; 401 without one."""
    nonce = sessions(request).nonce(request.cookies.get(COOKIE))
    if nonce is None:
        raise HTTPException(401, "no valid session: log in at /login")
    return nonce


PageSession = Annotated[str, Depends(page_session)]
FeedSession = Annotated[str, Depends(feed_session)]


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of a repeated one)."""
    return dict(parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True))


def check_post(request: Request, nonce: str, fields: dict[str, str]) -> None:
    """403 for a POST from another site's page or without this session's CSRF token."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None and origin != own:
        raise HTTPException(403, f"refused: the request came from a page of {origin!r}")
    given = fields.get("csrf") or request.headers.get("x-csrf-token") or ""
    if not hmac.compare_digest(given.encode(), sessions(request).csrf(nonce).encode()):
        raise HTTPException(403, "refused: missing or wrong CSRF token; reload the page")


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path of this server: an open redirect would hand the login to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


router = APIRouter(include_in_schema=False)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    found = sessions(request)
    if found.token is None:
        return RedirectResponse("/", status_code=303)
    return page(request, "login.html", found.csrf(LOGIN), next=_safe_next(next), failed=False)


@router.post("/login")
async def login(request: Request) -> Response:
    found = sessions(request)
    if found.token is None:
        return RedirectResponse("/", status_code=303)
    fields = await form(request)
    check_post(request, LOGIN, fields)
    target = _safe_next(fields.get("next"))
    if not found.check_token(fields.get("token", "")):
        return page(request, "login.html", found.csrf(LOGIN), code=401, next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        found.issue(),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, nonce: PageSession) -> Response:
    check_post(request, nonce, await form(request))
    response = RedirectResponse("/login" if sessions(request).token else "/", status_code=303)
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response
