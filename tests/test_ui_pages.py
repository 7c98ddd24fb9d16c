"""The web UI in a real browser against a real `engine serve` (no token: loopback, no login):
the runs list, a run's graph, timeline and live updates, a step's attempts and logs, the run
form, cancel and resume, ticks, markup shown as text, and a phone's width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect
from served import Server
from ui_browser import browser, page, serve, start, steps, until, workdir

from engine.cron import CronSchedule
from engine.store import Store
from engine.store.types import utcnow

__all__ = ["browser", "page"]

XSS = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"

RUNNERS = f"""
from pathlib import Path
from zoneinfo import ZoneInfo
from engine import job_handler

XSS = {XSS!r}

@job_handler("ok")
def ok(inputs, ctx):
    print("said " + XSS)
    return {{"echo": inputs, "html": XSS}}

@job_handler("boom")
def boom(inputs, ctx):
    raise ValueError("broken " + XSS)

@job_handler("hold")
def hold(inputs, ctx):
    n = 0
    while not Path(f"go-{{ctx.instance_id}}").exists():
        print(f"tick {{n}}", flush=True)
        n += 1
        if ctx.cancel_event.wait(0.1):
            return "cancelled"
    return "went"

@job_handler("chatty")
def chatty(inputs, ctx):
    for n in range(1200):
        print(f"line {{n}}")

@job_handler("regions")
def regions(inputs, ctx):
    return [{{"key": k}} for k in ("north", "south", XSS, "east", "west")]

@job_handler("region")
def region(inputs, ctx):
    if inputs["key"] == "east":
        raise RuntimeError("east is down")
    return inputs["key"]
"""

SHAPES = f"""
name: shapes
params:
  who: {{type: string, default: {XSS!r}}}
steps:
  - id: start
    runner: ok
    inputs: {{who: "{{{{ params.who }}}}"}}
    nextSteps: [fail, never, list, wait]
  - id: fail
    runner: boom
    nextSteps: [{{step: rescue, on: failure}}]
  - id: rescue
    runner: ok
  - id: never
    runner: ok
    condition: "params.who == 'nobody'"
  - id: list
    runner: regions
    nextSteps: [per_region]
  - id: per_region
    runner: region
    map: {{items: "{{{{ steps.list.result }}}}", as: r, key: "{{{{ r.key }}}}"}}
    inputs: {{key: "{{{{ r.key }}}}"}}
  - id: wait
    runner: hold
"""

TYPED = """
name: typed
description: A run form from typed params
params:
  count: {type: integer, description: how many}
  mode: {type: string, enum: [fast, slow], default: fast}
  verbose: {type: boolean, default: false}
  label: {type: string, default: plain}
  tags: {type: array, default: ['say "hi" onfocus="window.pwned=3"']}
steps:
  - {id: only, runner: ok, inputs: {count: "{{ params.count }}"}}
"""

NIGHTLY = """
name: nightly
description: "Runs at <b>night</b>"
cron: "30 2 * * *"
timezone: Asia/Seoul
steps:
  - {id: only, runner: ok}
"""

SEALED = """
name: sealed
params:
  token: {type: string, secret: true}
steps:
  - {id: only, runner: ok, inputs: {token: "{{ params.token }}"}}
"""
TOKEN = "hunter2-typed-in-the-form"

CHATTY = """
name: chatty
steps:
  - {id: talk, runner: chatty}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = workdir(
        tmp_path_factory.mktemp("ui"),
        RUNNERS,
        {"shapes": SHAPES, "typed": TYPED, "nightly": NIGHTLY, "chatty": CHATTY, "sealed": SEALED},
    )
    server = serve(root, "--max-instances", "8")
    yield server
    server.terminate()


@pytest.fixture(autouse=True)
def released(server: Server) -> Iterator[None]:
    """Every run a test held is let go after it, passed or failed, so that no held run keeps
    a slot from the next test."""
    yield
    for held in server.cwd.glob("held-*"):
        release(server, int(held.name.removeprefix("held-")))


def holding(server: Server) -> int:
    """A `shapes` run whose `wait` step runs (until released) and all else has ended."""
    instance_id = start(server, "shapes")
    (server.cwd / f"held-{instance_id}").touch()
    until(
        lambda: (
            steps(server, instance_id).get("wait") == "running"
            and len(steps(server, instance_id)) == 7
            and "running" not in {s for k, s in steps(server, instance_id).items() if k != "wait"}
        )
    )
    return instance_id


def release(server: Server, instance_id: int) -> None:
    (server.cwd / f"go-{instance_id}").touch()
    (server.cwd / f"held-{instance_id}").unlink(missing_ok=True)


def node(page: Any, step: str) -> Any:
    return page.locator(f'#graph g.node[data-step="{step}"]')


def test_a_run_page_colours_every_step_and_follows_the_run_to_its_end(
    server: Server, page: Any
) -> None:
    instance_id = holding(server)
    page.goto(f"{server.url}/ui/runs/{instance_id}")
    expect(node(page, "start")).to_have_class(re.compile(r"\bs-succeeded\b"))
    expect(node(page, "fail")).to_have_class(re.compile(r"\bs-failed\b"))
    expect(node(page, "never")).to_have_class(re.compile(r"\bs-skipped\b"))
    expect(node(page, "wait")).to_have_class(re.compile(r"\bs-running\b"))
    mapped = node(page, "per_region")
    expect(mapped).to_have_class(re.compile(r"\bmapped\b"))
    expect(mapped).to_contain_text("4/5 succeeded · 1 failed")
    expect(page.locator("#graph text.edge-label")).to_have_text(["failure"])
    expect(page.locator("#timeline g.bar")).to_have_count(7)
    expect(page.locator("#step-table tbody tr")).to_have_count(7)
    expect(page.locator("#cancel-form")).to_be_visible()
    expect(page.locator("#resume-form")).to_be_hidden()

    release(server, instance_id)
    expect(node(page, "wait")).to_have_class(re.compile(r"\bs-succeeded\b"))
    expect(page.locator("#run-status .badge")).to_have_text("failed")
    expect(page.locator('#step-table tr[data-step="wait"] .c-status')).to_have_text("succeeded")
    expect(page.locator("#cancel-form")).to_be_hidden()
    expect(page.locator("#resume-form")).to_be_visible()


def test_a_step_page_shows_attempts_the_error_with_its_traceback_result_and_items(
    server: Server, page: Any
) -> None:
    instance_id = holding(server)
    release(server, instance_id)
    server.wait(instance_id, "failed")
    page.goto(f"{server.url}/ui/runs/{instance_id}/steps/fail")
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    details = page.locator("details.error-box")
    expect(details.locator("summary")).to_contain_text("ValueError: broken")
    expect(details.locator("pre")).to_be_hidden()
    details.locator("summary").click()
    expect(details.locator("pre")).to_contain_text("Traceback (most recent call last)")

    page.goto(f"{server.url}/ui/runs/{instance_id}/steps/start")
    expect(page.locator("#result")).to_contain_text('"echo"')
    expect(page.locator("#log-lines")).to_contain_text("said ")
    expect(page.locator("#log-state")).to_have_text("complete")

    page.goto(f"{server.url}/ui/runs/{instance_id}/steps/per_region")
    expect(page.locator("#item-summary")).to_have_text("4/5 succeeded · 1 failed")
    expect(page.locator("#items tbody tr")).to_have_count(5)
    page.get_by_role("link", name="failed (1)").click()
    expect(page.locator("#items tbody tr")).to_have_count(1)
    expect(page.locator("#items tbody tr")).to_contain_text("east")
    page.locator("#items a.error-line").click()  # the item's own attempts, its whole error
    expect(page.locator("#item-key")).to_have_text("east")
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    box = page.locator("details.error-box")
    expect(box.locator("summary")).to_contain_text("RuntimeError: east is down")
    box.locator("summary").click()
    expect(box.locator("pre")).to_contain_text("Traceback (most recent call last)")


def test_a_running_steps_logs_are_followed_until_it_ends(server: Server, page: Any) -> None:
    instance_id = holding(server)
    page.goto(f"{server.url}/ui/runs/{instance_id}/steps/wait")
    expect(page.locator("#log-state")).to_have_text("following")
    seen = len(page.locator("#log-lines span").all())
    expect(page.locator("#log-lines span")).not_to_have_count(seen)
    release(server, instance_id)
    expect(page.locator("#log-state")).to_have_text("complete")
    lines = page.locator("#log-lines span").all_text_contents()
    assert [line.split()[-1] for line in lines] == [str(n) for n in range(len(lines))]


def test_markup_a_run_holds_is_shown_as_text_and_never_runs(server: Server, page: Any) -> None:
    instance_id = holding(server)
    release(server, instance_id)
    server.wait(instance_id, "failed")
    run = f"{server.url}/ui/runs/{instance_id}"
    page.goto(run)
    page.locator("details.params summary").click()
    expect(page.locator("#run-params")).to_contain_text(XSS.replace('"', '\\"'))
    page.goto(f"{run}/steps/start")
    expect(page.locator("#log-lines")).to_contain_text("said " + XSS)
    expect(page.locator("#result")).to_contain_text(XSS)
    page.goto(f"{run}/steps/fail")
    page.locator("details.error-box summary").click()
    expect(page.locator("details.error-box pre")).to_contain_text("broken " + XSS)
    page.goto(f"{run}/steps/per_region")
    expect(page.locator("#items")).to_contain_text(XSS)
    page.get_by_role("link", name=XSS).click()
    expect(page.locator("#item-key")).to_have_text(XSS)
    assert page.evaluate("window.pwned") is None
    assert page.locator("img[src=x]").count() == 0


def test_the_runs_list_filters_pages_on_the_server_and_shows_new_runs(
    server: Server, page: Any
) -> None:
    first = start(server, "typed", count=1)
    server.wait(first, "succeeded")
    for n in range(50):
        start(server, "typed", count=n)
    until(
        lambda: (
            not any(
                server.client.get(f"/batch/instances?status={s}").json()
                for s in ("pending", "running")
            )
        )
    )
    page.goto(f"{server.url}/?definition=typed")
    expect(page.locator("#runs tbody tr")).to_have_count(50)
    expect(page.locator("#runs .c-definition")).to_have_text(["typed"] * 50)
    page.get_by_role("link", name="next →").click()
    expect(page).to_have_url(re.compile(r"page=1"))
    assert page.locator("#runs tbody tr").count() >= 1
    page.goto(f"{server.url}/")
    page.select_option("select[name=status]", "failed")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=failed"))
    for status in page.locator("#runs .c-status").all_text_contents():
        assert status == "failed"

    page.goto(f"{server.url}/?definition=typed")
    newest = start(server, "typed", count=99)
    row = page.locator(f'#runs tr[data-id="{newest}"]')
    expect(row.locator(".c-status")).to_have_text("succeeded")
    expect(page.locator("#runs tbody tr").first).to_have_attribute("data-id", str(newest))
    expect(page.locator("#runs tbody tr")).to_have_count(50)


def test_the_runs_list_follows_a_run_cancelled_and_resumed(server: Server, page: Any) -> None:
    instance_id = holding(server)
    page.goto(f"{server.url}/")
    status = page.locator(f'#runs tr[data-id="{instance_id}"] .c-status')
    expect(status).to_have_text("running")
    server.client.post(f"/batch/instances/{instance_id}/cancel")
    expect(status).to_have_text("cancelled")
    release(server, instance_id)
    # A resume changes the status but none of the instance's timestamps: the page's rows are
    # sent with each poll, and those whose status differs come back.
    assert server.client.post(f"/batch/instances/{instance_id}/resume").status_code == 202
    expect(status).to_have_text(re.compile("running|failed"))
    expect(status).to_have_text("failed")


def test_the_run_form_types_params_dry_runs_and_starts_a_run(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/ui/definitions/typed")
    count = page.locator('[name="p.count"]')
    expect(count).to_have_attribute("type", "number")
    expect(count).to_have_attribute("step", "1")
    assert count.get_attribute("required") is not None
    expect(page.locator('[name="p.mode"] option')).to_have_text(
        ['default ("fast")', "fast", "slow"]
    )
    expect(page.locator('[name="p.verbose"] option')).to_have_text(
        ["default (false)", "true", "false"]
    )
    expect(page.locator('[name="p.label"]')).to_have_attribute("placeholder", "plain")
    tags = page.locator('[name="p.tags"]')
    expect(tags).to_have_attribute("placeholder", '["say \\"hi\\" onfocus=\\"window.pwned=3\\""]')
    assert tags.get_attribute("onfocus") is None

    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#run-errors")).to_contain_text("params.count: Field required")

    count.fill("5")
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#plan-params")).to_contain_text('"count": 5')
    expect(page.locator("#plan-params")).to_contain_text('"mode": "fast"')
    expect(page.locator("#plan-params")).to_contain_text('"verbose": false')
    expect(page.locator("#plan-order li")).to_have_text(["only (ok)"])
    expect(page.locator('[name="p.count"]')).to_have_value("5")

    page.select_option('[name="p.mode"]', "slow")
    page.select_option('[name="p.verbose"]', "true")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page).to_have_url(re.compile(r"/ui/runs/\d+(#run)?$"))
    instance_id = int(re.findall(r"/ui/runs/(\d+)", page.url)[0])
    doc = server.wait(instance_id, "succeeded")
    assert doc["params"] == {
        "count": 5,
        "mode": "slow",
        "verbose": True,
        "label": "plain",
        "tags": ['say "hi" onfocus="window.pwned=3"'],
    }
    assert doc["trigger"] == "http"


def test_a_secret_param_is_typed_hidden_and_never_shown_again(server: Server, page: Any) -> None:
    """The run form asks for a secret param in a password field; neither the dry run's page
    nor the run's pages send its value back (the field comes back empty), and the run gets it."""
    page.goto(f"{server.url}/ui/definitions/sealed")
    token = page.locator('[name="p.token"]')
    expect(token).to_have_attribute("type", "password")
    token.fill(TOKEN)
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#plan-params")).to_contain_text('"token": "***"')
    expect(page.locator('[name="p.token"]')).to_have_value("")
    assert TOKEN not in page.content()

    page.locator('[name="p.token"]').fill(TOKEN)
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page).to_have_url(re.compile(r"/ui/runs/\d+(#run)?$"))
    instance_id = int(re.findall(r"/ui/runs/(\d+)", page.url)[0])
    doc = server.wait(instance_id, "succeeded")
    assert doc["params"] == {"token": "***"}
    assert doc["steps"][0]["result"]["echo"] == {"token": "***"}
    for path in (f"/ui/runs/{instance_id}", f"/ui/runs/{instance_id}/steps/only"):
        page.goto(server.url + path)
        assert TOKEN not in page.content()


def test_cancel_and_resume_buttons(server: Server, page: Any) -> None:
    instance_id = holding(server)
    page.goto(f"{server.url}/ui/runs/{instance_id}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".notice")).to_have_text("Cancel requested.")
    expect(page.locator("#run-status .badge")).to_have_text("cancelled")
    expect(node(page, "wait")).to_have_class(re.compile(r"\bs-cancelled\b"))
    expect(page.locator("#resume-form")).to_be_visible()

    release(server, instance_id)
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".notice")).to_contain_text("Resuming")
    expect(page.locator("#run-status .badge")).to_have_text("failed")
    expect(node(page, "wait")).to_have_class(re.compile(r"\bs-succeeded\b"))
    assert steps(server, instance_id)["wait"] == "succeeded"


def test_the_ticks_page_shows_skip_reasons(server: Server, page: Any) -> None:
    store = Store(server.db)
    try:
        at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
        store.ticks.skip("typed", at, "cron", "a-test", "overlap: run <b>7</b> still running")
    finally:
        store.close()
    page.goto(f"{server.url}/ui/ticks")
    row = page.locator("#ticks tbody tr", has_text="2026-01-02 03:04:00")
    expect(row.locator(".c-reason")).to_have_text("overlap: run <b>7</b> still running")
    expect(row.locator(".badge")).to_have_text("skipped")


def test_pages_fit_a_phone_and_only_the_graph_scrolls_sideways(
    server: Server, browser: Any
) -> None:
    instance_id = holding(server)
    release(server, instance_id)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        phone = context.new_page()
        for path in (
            "/",
            f"/ui/runs/{instance_id}",
            f"/ui/runs/{instance_id}/steps/fail",
            "/ui/definitions",
            "/ui/definitions/shapes",
            "/ui/ticks",
        ):
            phone.goto(server.url + path)
            phone.wait_for_load_state("load")
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} is {width} px wide"
        phone.goto(f"{server.url}/ui/runs/{instance_id}")
        box = phone.locator("#graph-box")
        assert box.evaluate("b => b.scrollWidth > b.clientWidth")
    finally:
        context.close()


def test_ui_responses_carry_the_content_security_policy(server: Server) -> None:
    for path in ("/", "/ui/definitions", "/ui/static/ui.js"):
        headers = server.client.get(path).headers
        assert headers["content-security-policy"] == (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        )
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
    assert "content-security-policy" not in server.client.get("/batch/instances").headers


def test_the_static_assets_are_package_data() -> None:
    import tomllib

    from engine import ui

    config = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["engine.ui"]
    root = Path(ui.__file__).parent
    shipped = {p for pattern in patterns for p in root.glob(pattern)}
    assert shipped == {*root.glob("templates/*"), *root.glob("static/*")}


def test_a_feed_cursor_needs_its_offset_and_may_be_any_time(server: Server) -> None:
    feed = "/ui/feed/runs"
    assert server.client.get(feed, params={"since": "2026-01-01T00:00:00"}).status_code == 422
    for since in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        reply = server.client.get(feed, params={"since": since})
        assert reply.status_code == 200, reply.text


def test_hostile_ids_times_and_cursors_are_refused_never_a_server_error(server: Server) -> None:
    """Numbers past the columns' types, times at the ends of the calendar with offsets that push
    them past it, and odd strings: a 4xx or a page, never a 500."""
    huge = "99999999999999999999"
    ends = ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59")
    gets = [
        f"/ui/runs/{huge}",
        "/ui/runs/0/steps/a",
        f"/ui/runs/{huge}/steps/a?item=%00&status=%3Cb%3E",
        f"/ui/runs/{huge}/graph.svg",
        f"/ui/runs/{huge}/timeline.svg?tpage=1000000",
        f"/ui/feed/runs/{huge}/logs?after=18446744073709551616",
        "/ui/feed/runs/1/logs?after=-1",
        "/?page=-1&status=%00&definition=" + "x" * 10_000,
        *(f"/ui/feed/runs?since={since}" for since in ends),
        *(f"/ui/feed/runs/1?since={since}" for since in ends),
        f"/ui/feed/runs/{huge}?since=2026-01-01T00:00:00Z",
    ]
    for path in gets:
        reply = server.client.get(path.replace("+", "%2B"))
        assert reply.status_code < 500, (path, reply.status_code, reply.text[:300])
    for path in (f"/ui/runs/{huge}/cancel", f"/ui/runs/{huge}/resume"):
        assert server.client.post(path).status_code < 500, path


def test_a_definition_page_shows_its_next_ticks_source_and_graph(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/ui/definitions")
    row = page.locator("#definitions tbody tr", has_text="nightly")
    expect(row).to_contain_text("Runs at <b>night</b>")
    row.get_by_role("link", name="nightly").click()
    ticks = page.locator("#next-ticks li")
    expect(ticks).to_have_count(5)
    first = CronSchedule("30 2 * * *", "Asia/Seoul").after(utcnow())
    assert first is not None
    seoul = first.astimezone(ZoneInfo("Asia/Seoul"))
    expect(ticks.first).to_have_text(f"{first:%Y-%m-%d %H:%M:%S} UTC ({seoul:%Y-%m-%d %H:%M} KST)")
    assert seoul.hour == 2 and seoul.minute == 30
    expect(page.locator("#source")).to_contain_text('cron: "30 2 * * *"')
    expect(page.locator("#graph g.node")).to_have_count(1)


def test_an_unknown_run_or_definition_is_a_page_and_stays_json_in_the_api(
    server: Server, page: Any
) -> None:
    page.goto(f"{server.url}/ui/runs/999999")
    expect(page.locator("#missing")).to_have_text("no instance with id 999999")
    reply = server.client.get("/ui/definitions/nope")
    assert reply.status_code == 404 and "no definition named" in reply.text
    assert reply.headers["content-type"].startswith("text/html")
    api = server.client.get("/batch/instances/999999")
    assert api.status_code == 404 and api.json() == {"detail": "no instance with id 999999"}


def test_a_steps_logs_come_a_page_at_a_time(server: Server, page: Any) -> None:
    instance_id = start(server, "chatty")
    server.wait(instance_id, "succeeded")
    page.goto(f"{server.url}/ui/runs/{instance_id}/steps/talk")
    lines = page.locator("#log-lines span")
    expect(lines).to_have_count(500)
    expect(page.locator("#log-state")).to_have_text("more lines to load")
    page.get_by_role("button", name="Load more").click()
    expect(lines).to_have_count(1000)
    page.get_by_role("button", name="Load more").click()
    expect(lines).to_have_count(1200)
    expect(page.locator("#log-state")).to_have_text("complete")
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    assert lines.last.text_content().endswith("line 1199\n")
