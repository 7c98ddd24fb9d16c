"""An instance's JSON with every attempt (`engine runs show --json`, `engine run --json`,
`GET /batch/instances/{id}`) is written as its attempts are read, a page at a time.

Found on a mapped step of 100,000 items: `runs show --json` held 653 MB and the server 513 MB
per request (every attempt as a row, a model, a dict and the whole text at once), so a few
requests could take a server's memory. Now 175 MB and 187 MB, most of it the two 100,000-entry
results the instance holds (docs/performance.md).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_cli import ENGINE
from test_map import Items, definition, run
from test_map_crash import TALLY_RUNNERS, tally
from test_map_limits import json_values

import engine.jsondata
from engine.jsondata import json_pieces
from engine.store import Store

KEYED = '{items: "{{ steps.make.result }}", as: it, key: "{{ it.code }}"}'
PARAMS = {"items": [{"code": code} for code in ["a", "é", "<b>[/bold]", "日本", "c"]]}


@pytest.fixture
def mapped(store: Store, registry) -> int:
    """A failed instance whose mapped step has items that failed (with tracebacks), were
    retried, and succeeded; its id."""
    Items(registry, fails={"é": 1, "c": 5})
    _, view = run(store, registry, definition(KEYED, retry=2), PARAMS)
    assert view.status == "failed"
    return view.id


@pytest.mark.parametrize("page", [1, 2, 1000])
def test_the_attempts_read_a_page_at_a_time_are_every_attempt_in_start_order(
    store: Store, mapped: int, page: int
) -> None:
    whole = store.get_instance(mapped).steps
    assert whole is not None and len(whole) == 10  # make, fan, 7 item attempts, after
    assert list(store.attempts(mapped, page=page)) == whole
    items = [a for a in whole if a.item is not None]
    assert list(store.attempts(mapped, only_items=True, page=page)) == items


def test_runs_show_json_prints_exactly_what_the_whole_instance_dumps(
    store: Store, mapped: int, tmp_path: Path
) -> None:
    shown = subprocess.run(
        [ENGINE, "runs", "show", str(mapped), "--json", "--db", store.url],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    expected = json.dumps(store.get_instance(mapped).to_json(), indent=2) + "\n"
    assert shown.stdout == expected


def test_the_page_query_reads_the_index_and_sorts_nothing(sqlite_store: Store) -> None:
    """Without `ix_batch_step_result_instance_id` each page sorts every row of the instance
    again: 100 sorts of 100,000 rows for a mapped step of that size."""
    database = sqlite_store.url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM batch_step_result "
            "WHERE batch_instance_id = 1 AND id > 5 ORDER BY id LIMIT 1000"
        ).fetchall()
    details = " ".join(row[-1] for row in plan)
    assert "ix_batch_step_result_instance_id" in details and "TEMP B-TREE" not in details, plan


@settings(max_examples=200)
@example(head={"steps": 1, "": None}, entries=[], indent=None, piece=1)  # found by CI
@example(head={"steps": [1], "a": "[]"}, entries=[{"b": []}], indent=2, piece=1)
@given(
    head=st.dictionaries(st.text(), json_values, max_size=4),
    entries=st.lists(json_values, max_size=12),
    indent=st.sampled_from([None, 1, 2, 4]),
    piece=st.integers(1, 200),
)
def test_the_pieces_join_into_the_text_json_dumps_writes(head, entries, indent, piece):
    """`head` may hold the key already (anything, anywhere): the entries replace it, last."""
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    others = {k: v for k, v in head.items() if k != "steps"}
    expected = json.dumps(
        {**others, "steps": entries}, **({"indent": indent} if indent else compact)
    )
    pieces_were, engine.jsondata.PIECE_CHARS = engine.jsondata.PIECE_CHARS, piece
    try:
        pieces = list(json_pieces(head, "steps", entries, indent=indent))
    finally:
        engine.jsondata.PIECE_CHARS = pieces_were
    assert "".join(pieces) == expected


def test_a_reader_stalled_mid_stream_holds_up_no_run_and_readers_racing_a_run_see_each_row_once(
    store: Store, tmp_path: Path
) -> None:
    """`engine runs show --json` of a 3,000-item instance is SIGSTOPped with most of its answer
    unread (the pipe is full) while another run of 3,000 items starts and ends; meanwhile other
    readers race that run. Woken, the stalled reader finishes its answer whole; every answer
    lists each attempt once.

    Found this way: the woken reader's JSON lost the rest of the write the stop interrupted
    (Linux returns a partial count, and CPython's buffered writer drops the rest without an
    error), until `engine.cli.streams` made every write whole."""
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "tally.py").write_text(TALLY_RUNNERS)
    (tmp_path / "tally.yaml").write_text(tally(3_000))

    def engine(*args: str, **kwargs: Any) -> Any:
        return subprocess.Popen([ENGINE, *args, "--db", store.url], cwd=tmp_path, **kwargs)

    first = engine("run", "tally.yaml", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert first.wait(120) == 0
    stalled = engine("runs", "show", "1", "--json", stdout=subprocess.PIPE)
    assert stalled.stdout is not None and stalled.stdout.read(1) == b"{"
    stalled.send_signal(signal.SIGSTOP)
    try:
        second = engine("run", "tally.yaml", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while second.poll() is None:
            if store.list_instances("tally")[0].id == 2:
                race = subprocess.run(
                    [ENGINE, "runs", "show", "2", "--json", "--db", store.url],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                )
                _each_attempt_once(json.loads(race.stdout))
        assert second.returncode == 0, "a stalled reader must not hold up a run"
    finally:
        stalled.send_signal(signal.SIGCONT)
    rest = stalled.stdout.read()
    assert stalled.wait(60) == 0
    doc = json.loads(b"{" + rest)
    assert sum(s["item"] is not None for s in doc["steps"]) == 3_000
    _each_attempt_once(doc)
    assert store.get_instance(2).status == "succeeded"


def _each_attempt_once(doc: dict[str, Any]) -> None:
    seen = [(s["step"], s["item"], s["attempt"]) for s in doc["steps"]]
    assert len(seen) == len(set(seen)), "an attempt listed twice"
