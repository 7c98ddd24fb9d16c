"""A mapped step's collected result is a step's result like any other: `ENGINE_MAX_RESULT_BYTES`
bounds the whole list, not only each item's. Past it the step fails saying so, keeps every item's
result in its own row and stops holding them in memory; a resume under a higher limit collects
them without running any item again.

Found by feeding it 1,000 items of 1 MB each: the run held 3 GB, then died with a traceback
(`sqlite3.DataError: string or blob too big`).
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from test_cli import engine, write
from test_map import Items, definition, items, own, run

from engine.config import MAX_RESULT_BYTES_ENV
from engine.fanout import Fanout
from engine.jsondata import json_size, json_text

KEYED = '{items: "{{ steps.make.result }}", as: it, key: "{{ it.code }}"}'
PARAMS = {"items": [{"code": code} for code in ["a", "é", "日本", "c"]]}


def collected_size() -> int:
    """The size of the list the mapped step of `definition(KEYED)` collects from PARAMS."""
    return json_size([{"key": i["code"], "x": i["code"]} for i in PARAMS["items"]])


def test_a_list_exactly_at_the_limit_is_the_steps_result(store, registry, monkeypatch):
    Items(registry)
    monkeypatch.setenv(MAX_RESULT_BYTES_ENV, str(collected_size()))
    _, view = run(store, registry, definition(KEYED), PARAMS)
    assert view.status == "succeeded"
    assert own(view)[0].result == [{"key": k, "x": k} for k in ["a", "é", "日本", "c"]]


def test_a_list_one_byte_over_fails_the_step_and_a_resume_collects_it_running_no_item(
    store, registry, monkeypatch
):
    runner = Items(registry)
    size = collected_size()
    monkeypatch.setenv(MAX_RESULT_BYTES_ENV, str(size - 1))
    service, first = run(store, registry, definition(KEYED), PARAMS)
    assert first.status == "failed"
    (fan,) = own(first)
    assert fan.status == "failed" and fan.result is None
    assert fan.error == (
        f"the results of its 4 succeeded items come to {size:,} bytes as a JSON list, over the "
        f"limit of {size - 1:,} ({MAX_RESULT_BYTES_ENV}); each is kept with its item: raise the "
        "limit and resume the run to collect them"
    )
    assert [status for _, _, status in items(first)] == ["succeeded"] * 4
    assert next(s for s in first.steps if s.step == "after").status == "skipped"

    monkeypatch.setenv(MAX_RESULT_BYTES_ENV, str(size))
    service.resume(first.id, registry)
    view = store.get_instance(first.id)
    assert view.status == "succeeded"
    assert sum(runner.ran().values()) == 4, "no item may run again"
    assert own(view)[1].result == [{"key": k, "x": k} for k in ["a", "é", "日本", "c"]]


def test_failed_items_and_a_list_over_the_limit_are_both_said(store, registry, monkeypatch):
    Items(registry, fails={"c": 1})
    limit = json_size(PARAMS["items"])  # what `make` returns fits; three items' results do not
    monkeypatch.setenv(MAX_RESULT_BYTES_ENV, str(limit))
    _, view = run(store, registry, definition(KEYED), PARAMS)
    error = own(view)[0].error
    assert error.startswith("1 of 4 items failed: 'c'; the results of its 3 succeeded items ")
    assert f"over the limit of {limit} ({MAX_RESULT_BYTES_ENV})" in error


text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(json_values, max_size=12), st.data())
def test_the_counted_size_is_the_collected_lists_size_as_json(results, data):
    """Whatever the results and the order the items end in, the running count is exactly the
    UTF-8 size of `json_text` of the list, the size every other result is held to."""
    keys = [str(i) for i in range(len(results))]
    fanout = Fanout("s", 1, list(results), keys, concurrency=1, fail_fast=False, prior={})
    for index in data.draw(st.permutations(range(len(results)))):
        fanout.succeed(index, results[index])
    assert fanout.result_bytes == len(json_text(results).encode("utf-8")) == json_size(results)


def test_prior_results_count_towards_the_limit(monkeypatch):
    monkeypatch.setenv(MAX_RESULT_BYTES_ENV, "10")
    prior = {"a": (1, "succeeded", "x" * 20)}
    fanout = Fanout("s", 2, [1, 2], ["a", "b"], concurrency=1, fail_fast=False, prior=prior)
    assert fanout.results is None
    fanout.succeed(1, 0)
    status, result, error = fanout.outcome()
    assert (status, result) == ("failed", None)
    assert "come to 27 bytes" in error


def test_the_cli_says_what_to_raise_and_exits_1_without_a_traceback(tmp_path: Path):
    write(
        tmp_path / "runners" / "big.py",
        """
        from engine import job_handler

        @job_handler("big")
        def big(inputs, ctx):
            return "y" * 300_000
        """,
    )
    write(
        tmp_path / "big.yaml",
        """
        name: big
        steps:
          - id: fan
            runner: big
            map: {items: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], concurrency: 4}
        """,
    )
    db = f"sqlite:///{tmp_path}/e.db"
    ran = engine(tmp_path, "run", "big.yaml", "--json", "--db", db)
    assert ran.code == 1, ran
    assert "Traceback" not in ran.out + ran.err
    view = ran.json()
    fan = next(s for s in view["steps"] if s["item"] is None)
    assert fan["status"] == "failed"
    assert "come to 4,500,060 bytes as a JSON list, over the limit of 4,194,304" in fan["error"]
    assert [s["status"] for s in view["steps"] if s["item"] is not None] == ["succeeded"] * 15

    resumed = engine(
        tmp_path, "resume", str(view["id"]), "--json", "--db", db, ENGINE_MAX_RESULT_BYTES="5000000"
    )
    assert resumed.code == 0, resumed
    entries = resumed.json()["steps"]
    assert [s["attempt"] for s in entries if s["item"] is not None] == [1] * 15
    own = [s for s in entries if s["item"] is None]
    assert [(s["attempt"], s["status"]) for s in own] == [(1, "failed"), (2, "succeeded")]
    assert len(json.dumps(own[1]["result"])) == 4_500_060
