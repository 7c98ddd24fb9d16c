"""What the web UI's tests share: Chromium through Playwright (one browser per module), and a
real `engine serve` in a folder of runners and definitions.

Chromium is the Debian package (`/usr/bin/chromium`; `.ci/run` installs it); Playwright's own
browser download is never used. Without it the browser tests skip, except with
ENGINE_REQUIRE_SERVICES=1, where they fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable
from served import Server

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError as exc:
        unavailable("Playwright", str(exc))
    # A live update takes a poll or two (1.5 s each; a graph fetched again waits up to 4 s):
    # on a loaded machine, more than expect's default 5 s.
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at desktop width, failing the test on any script
    error or dialog (`alert` from injected markup would be one)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
    page.on(
        "dialog",
        lambda dialog: (page.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()),
    )
    yield page
    context.close()
    assert not page.problems


def workdir(root: Path, runners: str, definitions: dict[str, str]) -> Path:
    (root / "runners").mkdir(parents=True)
    (root / "runners" / "jobs.py").write_text(runners)
    (root / "defs").mkdir()
    for name, text in definitions.items():
        (root / "defs" / f"{name}.yaml").write_text(text)
    return root


def serve(root: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    return Server(root, f"sqlite:///{root / 'engine.db'}", *args, env=env)


def until(check: Callable[[], Any], timeout: float = 30) -> Any:
    """`check()` once it is truthy (a server-side condition a page cannot wait on)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return found


def start(server: Server, definition: str, **params: Any) -> int:
    reply = server.client.post("/batch/run", json={"definition": definition, "params": params})
    assert reply.status_code == 202, reply.text
    instance_id: int = reply.json()["instance_id"]
    return instance_id


def steps(server: Server, instance_id: int) -> dict[str, str]:
    """Each step's status (its last own row)."""
    doc = server.client.get(f"/batch/instances/{instance_id}").json()
    return {s["step"]: s["status"] for s in doc["steps"] if s["item"] is None}
