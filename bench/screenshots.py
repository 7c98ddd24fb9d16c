"""The screenshots of docs/ui.md and the README, made again from scratch.

    .venv/bin/python bench/screenshots.py [--out docs/ui]

Starts a real `engine serve` in a temporary folder with a small ETL-like definition (a mapped
step with a failing item, a failure handler, a skipped step, typed params), runs it three ways
(succeeded, failed, still running), seeds the UI tests' 10,000-step run, and photographs the
pages in Chromium at 1280 px and one at a phone's 390 px; then the login page of the same
server started with a token.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from served import Server  # the UI tests' server and seeds
from ui_seed import seed_grid

from engine.store import Store

CHROMIUM = "/usr/bin/chromium"
RUNNERS = """
import time
from pathlib import Path
from engine import job_handler

@job_handler("extract")
def extract(inputs, ctx):
    print(f"reading sales for {inputs['day']}")
    time.sleep(0.3)
    return {"regions": ["north", "south", "east", "west", "centre"], "rows": 1200}

@job_handler("load_region")
def load_region(inputs, ctx):
    time.sleep(0.2)
    if inputs["region"] == "east" and inputs["strict"]:
        raise RuntimeError("east: 3 rows without an amount")
    ctx.logger.info("loaded %s", inputs["region"])
    return {"region": inputs["region"], "rows": 240}

@job_handler("report")
def report(inputs, ctx):
    while not Path(f"go-{ctx.instance_id}").exists():
        if ctx.cancel_event.wait(0.1):
            return None
    return {"sent": True}

@job_handler("alert")
def alert(inputs, ctx):
    print("paging the on-call engineer")
    return {"paged": True}

@job_handler("archive")
def archive(inputs, ctx):
    return {"archived": 0}
"""
SALES = """
name: sales
description: Daily sales by region
cron: "0 2 * * *"
timezone: Europe/Berlin
params:
  day: {type: string, default: "{{ run.logical_date[:10] }}", description: "day to load"}
  strict: {type: boolean, default: true}
  mode: {type: string, enum: [full, incremental], default: incremental}
  limit: {type: integer, default: 1000}
steps:
  - id: extract
    inputs: {day: "{{ params.day }}"}
    nextSteps: [per_region, {step: archive, condition: "params.mode == 'full'"}]
  - id: per_region
    runner: load_region
    map: {items: "{{ steps.extract.result.regions }}", as: region}
    inputs: {region: "{{ region }}", strict: "{{ params.strict }}"}
    nextSteps: [report, {step: alert, on: failure}]
  - id: report
  - id: alert
  - id: archive
"""


def shoot(page: Any, path: Path, full: bool = False) -> None:
    page.wait_for_load_state("load")
    page.screenshot(path=str(path), full_page=full)
    print(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/ui"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory(prefix="ui-shots-") as folder:
        root = Path(folder)
        (root / "runners").mkdir()
        (root / "runners" / "jobs.py").write_text(RUNNERS)
        (root / "defs").mkdir()
        (root / "defs" / "sales.yaml").write_text(SALES)
        db = f"sqlite:///{root / 'engine.db'}"
        store = Store(db)
        grid = seed_grid(store)
        for day, reason in ((1, "overlap: run 3 still running"), (2, "missed: no scheduler ran")):
            at = datetime(2026, 12, day, 1, 0, tzinfo=UTC)
            store.ticks.skip("sales", at, "cron", "host-a:4242:1f3a", reason)
        store.close()
        server = Server(root, db, "--no-recover")
        try:

            def run(**params: Any) -> int:
                reply = server.client.post(
                    "/batch/run", json={"definition": "sales", "params": params}
                )
                instance_id: int = reply.json()["instance_id"]
                return instance_id

            passed = run(strict=False)
            (root / f"go-{passed}").touch()
            server.wait(passed, "succeeded")
            failed = run(strict=True)
            server.wait(failed, "failed")
            running = run(strict=False, mode="full")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(f"{server.url}/ui/runs/{running}")
                report = page.locator('#graph g.node[data-step="report"]')
                expect(report).to_have_class(re.compile(r"\bs-running\b"))
                page.goto(f"{server.url}/")
                shoot(page, args.out / "runs.png")
                page.goto(f"{server.url}/ui/runs/{failed}")
                shoot(page, args.out / "run.png", full=True)
                page.goto(f"{server.url}/ui/runs/{failed}/steps/per_region?item=2")
                page.locator("details.error-box summary").first.click()
                shoot(page, args.out / "step.png")
                page.goto(f"{server.url}/ui/definitions/sales")
                page.get_by_role("button", name="Dry run").click()
                page.locator("#plan").scroll_into_view_if_needed()
                shoot(page, args.out / "definition.png", full=True)
                page.goto(f"{server.url}/ui/runs/{grid}")
                page.locator("#graph-box").scroll_into_view_if_needed()
                shoot(page, args.out / "run-10000-steps.png")
                page.goto(f"{server.url}/ui/ticks")
                shoot(page, args.out / "ticks.png")
                phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
                phone.goto(f"{server.url}/ui/runs/{running}")
                shoot(phone, args.out / "phone.png")
                browser.close()
            (root / f"go-{running}").touch()
            server.wait(running, "succeeded")
        finally:
            server.terminate()
        guarded = Server(root, db, "--no-recover", env={"ENGINE_API_TOKEN": "shown-nowhere"})
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 600})
                page.goto(f"{guarded.url}/")
                shoot(page, args.out / "login.png")
                browser.close()
        finally:
            guarded.terminate()


if __name__ == "__main__":
    main()
