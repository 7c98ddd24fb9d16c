"""The web UI on big runs: first paint and response sizes of a run page in Chromium.

    .venv/bin/python bench/ui.py [--repeat 5] [--items 100000] [--json FILE]

Seeds a fresh SQLite file (in a temporary folder) with the UI tests' big runs
(`tests/ui_seed.py`): a running 10,000-step instance (100 chains of 100 steps, 7,100 rows) and a
running mapped step of `--items` items, written straight into the database. Then starts a real
`engine serve --no-recover` on it and opens, in a fresh Chromium context each time (no cache),
the runs list, each run page and the mapped step's page. Per page: the first contentful paint
and the HTML's response time from the browser's performance timeline, the largest response and
all bytes the page loaded (its first feed poll included); then the feeds' answers and their
sizes over HTTP. Medians of `--repeat` rounds; docs/performance.md ("Web UI") gives the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from report import Column, table  # sibling modules: bench/ is not a package
from served import Server  # the UI tests' server and seeds: one way to make a big run
from ui_seed import seed_grid, seed_map

from engine.store import Store

CHROMIUM = "/usr/bin/chromium"
RUNNERS = """
from engine import job_handler

@job_handler("noop")
def noop(inputs, ctx):
    return 1
"""

PAGE_COLUMNS: list[Column] = [
    ("page", lambda r: r["page"]),
    ("first paint (ms)", lambda r: f"{r['fcp_ms']:.0f}"),
    ("HTML (ms)", lambda r: f"{r['html_ms']:.0f}"),
    ("largest response (KB)", lambda r: f"{r['largest_kb']:.1f}"),
    ("all responses (KB)", lambda r: f"{r['total_kb']:.1f}"),
]
FEED_COLUMNS: list[Column] = [
    ("answer", lambda r: r["answer"]),
    ("time (ms)", lambda r: f"{r['ms']:.1f}"),
    ("size (KB)", lambda r: f"{r['kb']:.2f}"),
]

PAINT = """() => {
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  const nav = performance.getEntriesByType("navigation")[0];
  return {fcp: paint ? paint.startTime : null, html: nav.responseEnd - nav.requestStart};
}"""


def measure(browser: Any, url: str, feed: bool) -> dict[str, float]:
    """One cold visit: paint, HTML time, largest and total response bytes (with the first
    poll of the page's feed, when it has one)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sizes: list[int] = []
    page.on("response", lambda response: sizes.append(len(response.body())))
    if feed:
        with page.expect_response(lambda r: "/ui/feed/" in r.url, timeout=30_000):
            page.goto(url)
    else:
        page.goto(url)
    page.wait_for_load_state("load")
    page.wait_for_function(
        "() => performance.getEntriesByName('first-contentful-paint').length > 0"
    )
    timing = page.evaluate(PAINT)
    context.close()
    return {
        "fcp_ms": timing["fcp"],
        "html_ms": timing["html"],
        "largest_kb": max(sizes) / 1024,
        "total_kb": sum(sizes) / 1024,
    }


def feeds(server: Server, grid: int, mapped: int) -> list[dict[str, Any]]:
    """The answers a page polls, over HTTP: time and size with nothing changed (a feed from
    its settled cursor), and the graph a page fetches again when a group changed."""
    rows = []
    for name, path in (
        ("run feed, 10,000 steps, nothing changed", f"/ui/feed/runs/{grid}"),
        ("run feed, mapped step, nothing changed", f"/ui/feed/runs/{mapped}"),
        ("runs list feed, nothing changed", "/ui/feed/runs"),
        ("graph.svg, 10,000 steps", f"/ui/runs/{grid}/graph.svg"),
    ):
        params: dict[str, Any] = {}
        if "/feed/" in path:
            first = server.client.get(path, params={"since": "2000-01-01T00:00:00Z"}).json()
            params = {"since": first["cursor"], "settled": True}
        times, size = [], 0
        for _ in range(5):
            began = time.perf_counter()
            reply = server.client.get(path, params=params)
            times.append((time.perf_counter() - began) * 1000)
            size = len(reply.content)
        rows.append({"answer": name, "ms": statistics.median(times), "kb": size / 1024})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-ui-") as folder:
        root = Path(folder)
        (root / "runners").mkdir()
        (root / "runners" / "jobs.py").write_text(RUNNERS)
        (root / "defs").mkdir()
        (root / "defs" / "none.yaml").write_text("name: none\nsteps: [{id: a, runner: noop}]\n")
        db = f"sqlite:///{root / 'engine.db'}"
        store = Store(db)
        started = time.perf_counter()
        grid, mapped = seed_grid(store), seed_map(store, args.items)
        seeded = time.perf_counter() - started
        store.close()
        server = Server(root, db, "--no-recover")
        try:
            pages = {
                "runs list": ("/", True),
                "run, 10,000 steps": (f"/ui/runs/{grid}", True),
                f"run, mapped step of {args.items:,} items": (f"/ui/runs/{mapped}", True),
                f"mapped step page ({args.items:,} items)": (
                    f"/ui/runs/{mapped}/steps/per_item",
                    True,
                ),
            }
            results: list[dict[str, Any]] = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                measure(browser, server.url + "/", True)  # warm the server's caches once
                for name, (path, feed) in pages.items():
                    rounds = [measure(browser, server.url + path, feed) for _ in range(args.repeat)]
                    results.append(
                        {"page": name}
                        | {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
                    )
                browser.close()
            answers = feeds(server, grid, mapped)
        finally:
            server.terminate()
    print(f"seeded in {seeded:.1f} s; medians of {args.repeat} cold visits\n")
    print(table(PAGE_COLUMNS, results))
    print()
    print(table(FEED_COLUMNS, answers))
    if args.json:
        args.json.write_text(json.dumps({"pages": results, "feeds": answers}, indent=2))


if __name__ == "__main__":
    main()
