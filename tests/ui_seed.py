"""Big runs written straight into a database for the web UI's size tests, its benchmark
(`bench/ui.py`) and its screenshots: a 10,000-step instance and a mapped step of 100,000 items,
in a few bulk inserts instead of running them.

Each is `running`, its lease held far into the future by a process that does not exist, so
that a server started with `--no-recover` shows it live and never adopts it. Its rows are a
minute old: a feed's cursor overlap (two seconds) never sends them again.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, update

from engine.jsondata import MAX_TEXT_CHARS
from engine.store import Store
from engine.store.tables import instances, step_logs, step_results
from engine.store.types import utcnow

BRANCHES = 100
DEPTH = 100
"""The 10,000-step run: this many parallel chains, each this deep."""
RUNNING_DEPTH = 70
"""Where each chain of the big run is running; below it, steps are pending."""


def grid_yaml(branches: int = BRANCHES, depth: int = DEPTH) -> str:
    lines = ["name: grid", "steps:"]
    for b in range(branches):
        for d in range(depth):
            following = f", nextSteps: [b{b}_{d + 1}]" if d + 1 < depth else ", nextSteps: []"
            lines.append(f"  - {{id: b{b}_{d}, runner: noop{following}}}")
    return "\n".join(lines) + "\n"


def grid_status(branch: int, depth: int) -> str | None:
    """Steps of one status in runs, broken here and there: what the collapse has to draw."""
    if depth < 50:
        return "failed" if (branch + depth) % 17 == 0 else "succeeded"
    if depth < RUNNING_DEPTH:
        return "skipped" if (branch + depth) % 3 else "succeeded"
    return "running" if depth == RUNNING_DEPTH else None


MAP_YAML = """
name: regions
steps:
  - {id: list, runner: noop, nextSteps: [per_item]}
  - id: per_item
    runner: noop
    map: {items: "{{ steps.list.result }}"}
    nextSteps: [report]
  - {id: report, runner: noop}
"""


def _instance(store: Store, name: str, source: str) -> int:
    version = hashlib.sha256(source.encode()).hexdigest()
    definition_id = store.save_definition(name, version, None, [], source)
    now = utcnow()
    with store.engine.begin() as conn:
        key = conn.execute(
            insert(instances).values(
                definition_id=definition_id,
                definition_name=name,
                status="running",
                trigger="cli",
                params={},
                started_at=now - timedelta(minutes=2),
                lease_owner="seeded:0:0",
                lease_expires_at=now + timedelta(days=1),
                created_at=now - timedelta(minutes=2),
            )
        ).inserted_primary_key
    assert key is not None
    return int(key[0])


def _row(instance_id: int, step: str, status: str, **more: Any) -> dict[str, Any]:
    at = utcnow() - timedelta(minutes=1)
    return {
        "batch_instance_id": instance_id,
        "step_key": step,
        "item_key": None,
        "attempt": 1,
        "status": status,
        "result_payload": {"ok": 1} if status == "succeeded" else None,
        "error": "RuntimeError: seeded failure" if status == "failed" else None,
        "started_at": at,
        "finished_at": None if status == "running" else at,
        "created_at": at,
        **more,
    }


def seed_grid(store: Store) -> int:
    """A running instance of `grid_yaml()`: 10,000 steps, 7,100 of them with a row."""
    instance_id = _instance(store, "grid", grid_yaml())
    rows = [
        _row(instance_id, f"b{b}_{d}", status)
        for b in range(BRANCHES)
        for d in range(DEPTH)
        if (status := grid_status(b, d)) is not None
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(step_results), rows)
    return instance_id


def seed_map(store: Store, items: int = 100_000) -> int:
    """A running instance whose mapped step has `items` items: 1% failed, 1% running, the
    rest succeeded."""
    instance_id = _instance(store, "regions", MAP_YAML)
    rows = [_row(instance_id, "list", "succeeded"), _row(instance_id, "per_item", "running")]
    for i in range(items):
        status = "failed" if i % 100 == 1 else "running" if i % 100 == 2 else "succeeded"
        rows.append(_row(instance_id, "per_item", status, item_key=str(i), result_payload=i))
    with store.engine.begin() as conn:
        conn.execute(insert(step_results), rows)
    return instance_id


BIG_ERROR = (
    "RuntimeError: seeded failure\n\nTraceback (most recent call last):\n"
    + '  File "/srv/jobs/deep.py", line 12, in deep\n    return deeper()\n' * 1100
)[:MAX_TEXT_CHARS]
"""An error as long as storage keeps (64 K characters), traceback included."""


def seed_failures(store: Store, attempts: int = 1000, items: int = 200, lines: int = 300) -> int:
    """An ended (failed) instance of MAP_YAML whose `list` failed `attempts` times and whose
    mapped step has `items` failed items, every error as long as storage keeps; its last attempt
    printed `lines` lines of 100,000 characters."""
    instance_id = _instance(store, "regions", MAP_YAML)
    rows = [
        _row(instance_id, "list", "failed", attempt=n, error=BIG_ERROR)
        for n in range(1, attempts + 1)
    ]
    rows.append(_row(instance_id, "per_item", "failed", error="items failed"))
    rows += [
        _row(instance_id, "per_item", "failed", item_key=str(i), error=BIG_ERROR)
        for i in range(items)
    ]
    said = [
        {
            "batch_instance_id": instance_id,
            "step_key": "list",
            "item_key": None,
            "attempt": attempts,
            "at": utcnow() - timedelta(minutes=1),
            "level": "info",
            "stream": "stdout",
            "message": f"{n} " + "x" * 100_000,
        }
        for n in range(lines)
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(step_results), rows)
        conn.execute(insert(step_logs), said)
        ended = {"status": "failed", "finished_at": utcnow(), "lease_owner": None}
        conn.execute(update(instances).where(instances.c.id == instance_id).values(**ended))
    return instance_id
