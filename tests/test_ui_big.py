"""Big runs in the web UI: a 10,000-step run and a mapped step of 100,000 items, seeded into
the database, on a real `engine serve`. Every response a run page makes stays under 200 KB, its
graph under a few hundred nodes, and a change of one step sends a few hundred bytes. (First
paint is measured by `bench/ui.py`, not asserted here.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from served import Server
from sqlalchemy import update
from ui_browser import browser, page, serve, workdir
from ui_seed import RUNNING_DEPTH, seed_failures, seed_grid, seed_map

from engine.store import Store
from engine.store.tables import step_results
from engine.store.types import utcnow
from engine.ui.layout import MAX_NODES

__all__ = ["browser", "page"]

LIMIT = 200 * 1024
RUNNERS = """
from engine import job_handler

@job_handler("noop")
def noop(inputs, ctx):
    return 1
"""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int, int]]:
    root = workdir(tmp_path_factory.mktemp("ui-big"), RUNNERS, {})
    (root / "defs" / "none.yaml").write_text("name: none\nsteps: [{id: a, runner: noop}]\n")
    store = Store(f"sqlite:///{root / 'engine.db'}")
    try:
        grid, mapped = seed_grid(store), seed_map(store)
    finally:
        store.close()
    server = serve(root, "--no-recover")
    yield server, grid, mapped
    server.terminate()


def sizes(page: Any) -> dict[str, int]:
    """The body size of every response the page gets, by URL (filled as they come)."""
    found: dict[str, int] = {}
    page.on("response", lambda response: found.__setitem__(response.url, len(response.body())))
    return found


def test_a_10000_step_run_page_sends_no_response_over_200_kb(
    seeded: tuple[Server, int, int], page: Any
) -> None:
    server, grid, _ = seeded
    seen = sizes(page)
    with page.expect_response(re.compile(r"/ui/feed/runs/\d+\?since=")):
        page.goto(f"{server.url}/ui/runs/{grid}")
    nodes = page.locator("#graph g.node")
    assert 10 <= nodes.count() <= MAX_NODES
    expect(page.locator("#graph g.node.k-group").first).to_be_visible()
    expect(page.locator("#step-table tbody tr")).to_have_count(100)
    expect(page.locator("h2#steps small")).to_have_text("10000")
    assert max(seen.values()) <= LIMIT, seen

    expect(page.locator("#timeline g.bar")).to_have_count(100)
    last = server.client.get(f"/ui/runs/{grid}/timeline.svg", params={"tpage": 70})
    assert last.text.count('class="bar ') == 100
    past = server.client.get(f"/ui/runs/{grid}/timeline.svg", params={"tpage": 71})
    assert past.text.count('class="bar ') == 0

    group = page.locator("#graph a", has=page.locator("g.k-group")).first
    members = int(group.locator("text.label").text_content().split()[0])
    group.click()
    expect(page.locator("h2#steps small")).to_contain_text(f"{members} in")
    assert max(seen.values()) <= LIMIT, seen


def test_one_changed_step_is_a_small_update_and_redraws_its_group(
    seeded: tuple[Server, int, int], page: Any
) -> None:
    server, grid, _ = seeded
    page.goto(f"{server.url}/ui/runs/{grid}")
    cursor = page.locator("body").get_attribute("data-cursor")
    assert cursor is not None
    feed = f"/ui/feed/runs/{grid}"
    # The first read from a cursor covers the overlap before it again (here: every row, as
    # they were all seeded at one instant); from then on only what changed after it.
    again = server.client.get(feed, params={"since": cursor}).json()
    assert again["settled"] and again["cursor"] == cursor
    assert 0 < len(again["steps"]) <= 300
    quiet = server.client.get(feed, params={"since": cursor, "settled": True})
    assert quiet.json()["steps"] == []

    step = f"b0_{RUNNING_DEPTH}"
    running = """n => Array.from(document.querySelectorAll("#graph g.node.s-running text.label"))
        .reduce((sum, label) => sum + parseInt(label.textContent), 0) === n"""
    page.wait_for_function(running, arg=100)
    store = Store(server.db)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                update(step_results)
                .where(step_results.c.batch_instance_id == grid, step_results.c.step_key == step)
                .values(status="succeeded", finished_at=utcnow())
            )
    finally:
        store.close()
    changed = server.client.get(feed, params={"since": cursor, "settled": True})
    assert [s["step"] for s in changed.json()["steps"]] == [step]
    assert len(changed.content) < 1024, changed.text
    # The step was drawn inside a group: the page fetches the graph again.
    page.wait_for_function(running, arg=99)


def test_a_100000_item_mapped_step_is_one_node_and_its_items_are_paged(
    seeded: tuple[Server, int, int], page: Any
) -> None:
    server, _, mapped = seeded
    seen = sizes(page)
    with page.expect_response(re.compile(r"/ui/feed/runs/\d+\?since=")):
        page.goto(f"{server.url}/ui/runs/{mapped}")
    node = page.locator('#graph g.node[data-step="per_item"]')
    expect(node).to_contain_text("98000/100000 succeeded · 1000 failed · 1000 running")
    expect(page.locator("#graph g.node")).to_have_count(3)
    node.click()
    expect(page.locator("#item-summary")).to_have_text(
        "98000/100000 succeeded · 1000 failed · 1000 running"
    )
    expect(page.locator("#items tbody tr")).to_have_count(100)
    page.get_by_role("link", name="failed (1000)").click()
    expect(page.locator("#items tbody tr").first).to_contain_text("1")
    page.get_by_role("link", name="next →").click()
    expect(page).to_have_url(re.compile(r"page=1"))
    expect(page.locator("#items tbody tr").first.locator("td").first).to_have_text("10001")
    assert max(seen.values()) <= LIMIT, seen


def test_the_seeded_runs_are_read_from_their_stored_version(
    seeded: tuple[Server, int, int],
) -> None:
    server, grid, mapped = seeded
    served = server.client.get("/definitions").json()
    assert [d["name"] for d in served] == ["none"]
    for instance_id in (grid, mapped):
        reply = server.client.get(f"/ui/runs/{instance_id}/graph.svg")
        assert reply.headers["content-type"].startswith("image/svg+xml")
        assert 0 < len(reply.content) <= LIMIT


def test_a_step_with_a_thousand_long_errors_is_a_small_page(
    seeded: tuple[Server, int, int],
) -> None:
    """1,000 failed attempts and 200 failed items, each error as long as storage keeps (64 K
    characters), and 300 log lines of 100,000 characters: each page of the step and each page
    of its logs stays under 200 KB, the last attempts shown with the last errors cut in their
    middle, an item's whole story on its own page, every line read once."""
    server, _, _ = seeded
    store = Store(server.db)
    try:
        instance_id = seed_failures(store)
    finally:
        store.close()
    base = f"/ui/runs/{instance_id}/steps"
    for path in ("/list", "/per_item", "/per_item?status=failed", "/per_item?item=7"):
        answer = server.client.get(base + path)
        assert answer.status_code == 200, path
        assert len(answer.content) < LIMIT, (path, len(answer.content))
    listed = server.client.get(f"{base}/list").text
    assert "The last 100 of 1000 attempts" in listed
    assert listed.count('class="error-box"') == 10
    assert "characters not shown" in listed and "return deeper()" in listed
    item = server.client.get(f"{base}/per_item?item=7").text
    assert item.count('class="error-box"') == 1 and "Traceback (most recent call last)" in item

    read, after = [], ""
    for _ in range(300):  # 300 lines of 100,000 characters: each shown cut, each page small
        answer = server.client.get(f"/ui/feed/runs/{instance_id}/logs?step=list{after}")
        assert len(answer.content) < LIMIT
        page = answer.json()
        read += [line["message"] for line in page["lines"]]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert [m.split(" ", 1)[0] for m in read] == [str(n) for n in range(300)]
    assert all(m.endswith("more characters: engine logs has them]") for m in read)


def test_rows_a_feed_answer_left_out_are_read_again_with_the_page(
    seeded: tuple[Server, int, int], page: Any
) -> None:
    """400 steps change at once: the feed sends the 300 newest and says there were more; the
    page reads its step table again, so the rows it shows, changed first, are not left stale."""
    server, _, _ = seeded
    store = Store(server.db)
    try:
        grid = seed_grid(store)
    finally:
        store.close()
    page.goto(f"{server.url}/ui/runs/{grid}")
    shown = page.locator("#step-table tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.step)"
    )
    others = [f"b{b}_{d}" for b in range(50, 100) for d in range(RUNNING_DEPTH)][:400]
    shown = [step for step in shown if int(step.split("_")[1]) <= RUNNING_DEPTH]  # with a row
    changed = shown + [step for step in others if step not in shown][: 400 - len(shown)]
    store = Store(server.db)
    try:
        with store.engine.begin() as conn:
            for n, step in enumerate(changed):  # the rows on the page change first
                at = utcnow() + timedelta(milliseconds=n)
                conn.execute(
                    update(step_results)
                    .where(
                        step_results.c.batch_instance_id == grid, step_results.c.step_key == step
                    )
                    .values(status="cancelled", finished_at=at)
                )
    finally:
        store.close()
    assert len(shown) > 10
    for step in (shown[0], shown[-1]):
        row = page.locator(f'#step-table tr[data-step="{step}"] .c-status')
        expect(row).to_contain_text("cancelled", timeout=20_000)
