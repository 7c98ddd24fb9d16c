"""The web UI with `ENGINE_API_TOKEN`: the login page and its cookie, pages and actions
refused without a session, CSRF tokens and origins, and the bearer API left bearer-only."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from served import Server
from ui_browser import browser, page, serve, start, workdir

from engine.ui.session import COOKIE, SESSION_SECONDS, Sessions

__all__ = ["browser", "page"]

TOKEN = "s3cret-token"
RUNNERS = """
from pathlib import Path
from engine import job_handler

@job_handler("hold")
def hold(inputs, ctx):
    while not ctx.cancel_event.wait(0.05):
        pass
    return "cancelled"
"""
HOLD = """
name: hold
steps:
  - {id: hold, runner: hold}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = workdir(tmp_path_factory.mktemp("ui-token"), RUNNERS, {"hold": HOLD})
    server = serve(root, env={"ENGINE_API_TOKEN": TOKEN})
    server.client.headers["Authorization"] = f"Bearer {TOKEN}"
    yield server
    server.terminate()


def browser_client(server: Server, **headers: str) -> httpx.Client:
    """A client that sends no bearer token, as a browser."""
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def logged_in(server: Server, **headers: str) -> tuple[httpx.Client, str]:
    """A client holding a session, and the CSRF token of its pages."""
    client = browser_client(server, **headers)
    login = client.get("/login")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', login.text)
    assert csrf is not None
    reply = client.post("/login", data={"token": TOKEN, "csrf": csrf.group(1), "next": "/"})
    assert reply.status_code == 303, reply.text
    runs = client.get("/")
    assert runs.status_code == 200
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', runs.text)
    assert found is not None
    return client, found.group(1)


def test_logging_in_in_a_browser_sets_an_http_only_strict_cookie(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/ui/definitions")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fui%2Fdefinitions$"))
    expect(page.locator("header nav")).to_have_count(0)  # nothing to go to before logging in
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    page.get_by_label("Token").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong token.")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}/ui/definitions")
    (cookie,) = page.context.cookies()
    assert cookie["name"] == COOKIE
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False
    assert 0 < cookie["expires"] - time.time() <= SESSION_SECONDS
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    assert page.context.cookies() == []
    page.goto(f"{server.url}/")
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_over_https_the_cookie_is_secure(server: Server) -> None:
    # uvicorn takes the scheme from X-Forwarded-Proto of a proxy on 127.0.0.1.
    https = {"X-Forwarded-Proto": "https"}
    client = browser_client(server, **https)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/login").text)
    assert csrf is not None
    reply = client.post("/login", data={"token": TOKEN, "csrf": csrf.group(1)})
    assert reply.status_code == 303
    flags = [part.strip().lower() for part in reply.headers["set-cookie"].split(";")]
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= set(flags)


def test_without_a_session_pages_redirect_and_feeds_and_actions_are_refused(
    server: Server,
) -> None:
    instance_id = start(server, "hold")
    client = browser_client(server)
    for path in ("/", f"/ui/runs/{instance_id}", "/ui/definitions/hold", "/ui/ticks"):
        reply = client.get(path)
        assert reply.status_code == 303, path
        assert reply.headers["location"].startswith("/login?next=")
    for path in (
        f"/ui/feed/runs/{instance_id}?since=2026-01-01T00:00:00Z",
        "/ui/feed/runs?since=2026-01-01T00:00:00Z",
        f"/ui/feed/runs/{instance_id}/logs?step=hold",
        f"/ui/runs/{instance_id}/graph.svg",
    ):
        assert client.get(path).status_code == 401, path
    forged = f"{9_999_999_999}.{'0' * 32}.{'0' * 64}"
    client.cookies.set(COOKIE, forged)
    runs = len(server.client.get("/batch/instances").json())
    assert client.post(f"/ui/runs/{instance_id}/cancel", data={"csrf": "x"}).status_code == 303
    assert client.post("/ui/definitions/hold/run", data={"action": "run"}).status_code == 303
    assert server.client.get(f"/batch/instances/{instance_id}").json()["status"] != "cancelled"
    assert len(server.client.get("/batch/instances").json()) == runs
    server.client.post(f"/batch/instances/{instance_id}/cancel")


def test_a_post_needs_the_sessions_csrf_token_and_no_foreign_origin(server: Server) -> None:
    instance_id = start(server, "hold")
    client, csrf = logged_in(server)
    _, other_csrf = logged_in(server)
    assert other_csrf != csrf
    cancel = f"/ui/runs/{instance_id}/cancel"
    assert client.post(cancel).status_code == 403
    assert client.post(cancel, data={"csrf": "0" * 64}).status_code == 403
    assert client.post(cancel, data={"csrf": other_csrf}).status_code == 403
    evil = {"Origin": "https://evil.example"}
    assert client.post(cancel, data={"csrf": csrf}, headers=evil).status_code == 403
    assert server.client.get(f"/batch/instances/{instance_id}").json()["status"] != "cancelled"
    own = {"Origin": server.url, "X-CSRF-Token": csrf}
    assert client.post(cancel, headers=own).status_code == 303
    assert client.post("/login", data={"token": TOKEN}).status_code == 403
    assert client.post("/logout").status_code == 403


def test_the_cookie_never_authorizes_the_bearer_api(server: Server) -> None:
    client, _ = logged_in(server)
    assert client.get("/batch/instances").status_code == 401
    assert client.post("/batch/run", json={"definition": "hold"}).status_code == 401
    assert client.get("/definitions").status_code == 401


def test_a_session_is_signed_by_the_token_and_expires() -> None:
    sessions = Sessions("one")
    cookie = sessions.issue(now=1_000_000)
    assert sessions.nonce(cookie, now=1_000_000 + SESSION_SECONDS) is not None
    assert sessions.nonce(cookie, now=1_000_001 + SESSION_SECONDS) is None
    assert Sessions("two").nonce(cookie, now=1_000_000) is None
    issued, nonce, mac = cookie.split(".")
    assert sessions.nonce(f"{int(issued) + 1}.{nonce}.{mac}", now=1_000_000) is None
    assert sessions.nonce(None) is None
    assert sessions.csrf(nonce) != Sessions("two").csrf(nonce)
    assert Sessions(None).nonce(None) == "anonymous"
