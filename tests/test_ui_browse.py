"""The web UI's queries (`engine.store.browse`) on SQLite and PostgreSQL: pages with their
counts, each step's last row, a mapped step's items by status, and what changed since a
cursor."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update

from engine.errors import InstanceNotFound
from engine.status import InstanceStatus
from engine.store import Store
from engine.store.browse import OVERLAP, Browse
from engine.store.tables import step_results
from engine.store.types import utcnow


def instance(store: Store, name: str = "etl", status: str = "running") -> int:
    definition_id = store.save_definition(name, "v" * 64, None, [], "name: x\n")
    instance_id = store.create_instance(definition_id, name, "cli", {})
    store.leases.start(instance_id, "test:0:0", utcnow() + timedelta(hours=1))
    if status != "running":
        store.leases.finish(instance_id, "test:0:0", InstanceStatus(status), None)
    return instance_id


def row(
    instance_id: int, step: str, attempt: int, status: str, item: str | None = None
) -> dict[str, Any]:
    at = utcnow() - timedelta(minutes=5)
    return {
        "batch_instance_id": instance_id,
        "step_key": step,
        "item_key": item,
        "attempt": attempt,
        "status": status,
        "result_payload": {"n": attempt},
        "error": None,
        "started_at": at,
        "finished_at": None if status == "running" else at,
        "created_at": at,
    }


def test_instances_are_paged_newest_first_with_their_count(store: Store) -> None:
    ids = [
        instance(store, name, status)
        for name, status in [
            ("etl", "succeeded"),
            ("etl", "failed"),
            ("other", "failed"),
            ("etl", "running"),
        ]
    ]
    browse = Browse(store.engine)
    views, total = browse.instances(None, None, 0, 2)
    assert [v.id for v in views] == ids[:1:-1] and total == 4
    views, total = browse.instances("etl", "failed", 0, 10)
    assert [v.id for v in views] == [ids[1]] and total == 1
    assert browse.instances(None, None, 4, 2) == ([], 4)
    assert browse.instance(ids[0]).status == "succeeded"
    with pytest.raises(InstanceNotFound):
        browse.instance(999)


def test_step_rows_attempts_and_items(store: Store) -> None:
    instance_id = instance(store)
    rows = [
        row(instance_id, "a", 1, "failed"),
        row(instance_id, "a", 2, "succeeded"),
        row(instance_id, "m", 1, "running"),
        *(row(instance_id, "m", 1, "failed", str(i)) for i in range(5)),
        *(row(instance_id, "m", 2, "succeeded", str(i)) for i in range(3)),
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(step_results), rows)
    browse = Browse(store.engine)
    last = {r.step: r for r in browse.step_rows(instance_id)}
    assert {s: (r.attempt, r.status) for s, r in last.items()} == {
        "a": (2, "succeeded"),
        "m": (1, "running"),
    }
    page, total = browse.attempts(instance_id, 1, 10)
    assert [(r.step, r.attempt) for r in page] == [("a", 2), ("m", 1)] and total == 3
    assert [a.attempt for a in browse.step_attempts(instance_id, "a")] == [1, 2]
    failed = browse.items(instance_id, "m", "failed", 0, 10)
    assert [(i.item, i.attempt) for i in failed] == [("3", 1), ("4", 1)]
    succeeded = browse.items(instance_id, "m", None, 1, 2)
    assert [(i.item, i.attempt) for i in succeeded] == [("4", 1), ("0", 2)]


def test_changes_since_a_cursor_read_the_overlap_once(store: Store) -> None:
    instance_id = instance(store)
    with store.engine.begin() as conn:
        conn.execute(insert(step_results), [row(instance_id, "a", 1, "running")])
    browse = Browse(store.engine)
    (seen,) = browse.step_rows(instance_id)
    cursor = seen.changed_at
    assert [r.step for r in browse.step_rows(instance_id, cursor)] == ["a"]
    assert browse.step_rows(instance_id, cursor, settled=True) == []
    assert browse.step_rows(instance_id, cursor + OVERLAP) == []
    with store.engine.begin() as conn:
        conn.execute(
            update(step_results)
            .where(step_results.c.batch_instance_id == instance_id)
            .values(status="succeeded", finished_at=utcnow())
        )
    (changed,) = browse.step_rows(instance_id, cursor, settled=True)
    assert changed.status == "succeeded" and changed.changed_at > cursor

    latest = browse.latest_change()
    assert latest is not None
    assert browse.instances_changed(latest, None, None, 10, settled=True) == ([], None)
    views, seen_at = browse.instances_changed(latest, None, None, 10)
    assert [v.id for v in views] == [instance_id] and seen_at == latest
    other = instance(store, "other")
    views, seen_at = browse.instances_changed(latest, "other", None, 10, settled=True)
    assert [v.id for v in views] == [other] and seen_at is not None and seen_at > latest
