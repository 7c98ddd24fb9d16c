"""`engine backfill` as real processes on SQLite and PostgreSQL: racing, failing, killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from test_schedule_cli import ENGINE, wait_until

from engine.store import Store

RUNNERS = """
import os, time
from engine import job_handler

@job_handler("count")
def count(inputs, ctx):
    with open(os.environ["CALLS_FILE"], "a") as calls:
        calls.write(inputs["at"] + "\\n")
    if os.path.exists(os.environ["CALLS_FILE"] + ".fail"):
        raise RuntimeError("no data yet")
    if os.path.exists(os.environ["CALLS_FILE"] + ".hang"):
        time.sleep(300)
    return inputs
"""


def project(tmp_path: Path, overlap: str = "skip") -> Path:
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "count.py").write_text(RUNNERS)
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "hourly.yaml").write_text(
        f"""
name: hourly
cron: "0 * * * *"
overlap: {overlap}
steps:
  - {{id: a, runner: count, inputs: {{at: "{{{{ run.scheduled_for }}}}"}}}}
"""
    )
    return tmp_path


def backfill(cwd: Path, db_url: str, start: str, end: str, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "ENGINE_DATABASE_URL": db_url,
        "ENGINE_LEASE_SECONDS": "2",
        "CALLS_FILE": str(cwd / "calls"),
    }
    return subprocess.Popen(
        [ENGINE, "backfill", "defs/hourly.yaml", "--start", start, "--end", end, "--json", *extra],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finished(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, list[dict], str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, json.loads(out) if out.strip() else [], err


def calls(cwd: Path) -> list[str]:
    path = cwd / "calls"
    return path.read_text().splitlines() if path.exists() else []


def hanging(tmp_path: Path, db_url: str, end: str) -> tuple[Path, subprocess.Popen]:
    """A backfill from 2026-11-01T00:00 to `end` whose first tick's runner hangs."""
    cwd = project(tmp_path)
    (cwd / "calls.hang").touch()
    proc = backfill(cwd, db_url, "2026-11-01T00:00", end)
    wait_until(lambda: len(calls(cwd)) == 1, "the first runner call")
    return cwd, proc


def test_ten_racing_backfills_fill_a_hundred_ticks_once(tmp_path, db_url):
    cwd = project(tmp_path)
    Store(db_url).close()  # migrate once, not in ten racing processes
    start, end = "2026-11-01T00:00", "2026-11-05T03:00"  # 100 hourly ticks
    racers = [backfill(cwd, db_url, start, end) for _ in range(10)]
    results = [finished(p, 300) for p in racers]
    assert [code for code, _, _ in results] == [0] * 10, [err[-2000:] for *_, err in results]
    assert len(calls(cwd)) == 100 and len(set(calls(cwd))) == 100, "100 runner calls, one a tick"
    store = Store(db_url)
    try:
        instances = store.list_instances(limit=1000)
        assert len(instances) == 100 and {v.status for v in instances} == {"succeeded"}
    finally:
        store.close()
    ran = Counter(o["scheduled_for"] for _, outcomes, _ in results for o in outcomes)
    assert len(ran) == 100 and set(ran.values()) == {10}, "every racer reports every tick"
    assert "100 ticks from 2026-11-01T00:00:00+00:00" in results[0][2]

    code, outcomes, err = finished(backfill(cwd, db_url, start, end))
    assert code == 0 and {o["how"] for o in outcomes} == {"earlier"}
    assert "100 succeeded (100 earlier)" in err
    assert len(calls(cwd)) == 100


def test_the_exit_code_says_whether_the_whole_range_succeeded(tmp_path, db_url):
    cwd = project(tmp_path)
    (cwd / "calls.fail").touch()
    code, outcomes, err = finished(backfill(cwd, db_url, "2026-11-01T00:00", "2026-11-01T01:00"))
    assert code == 1 and [o["status"] for o in outcomes] == ["failed", "failed"], err
    assert "Traceback" not in err

    (cwd / "calls.fail").unlink()
    code, outcomes, _ = finished(backfill(cwd, db_url, "2026-11-01T00:00", "2026-11-01T02:00"))
    assert code == 1, "the failed ticks still fail the range"
    assert [(o["status"], o["how"]) for o in outcomes] == [
        ("failed", "earlier"),
        ("failed", "earlier"),
        ("succeeded", "ran"),
    ]
    code, outcomes, err = finished(
        backfill(cwd, db_url, "2026-11-01T00:00", "2026-11-01T02:00", "--rerun-failed")
    )
    assert code == 0, err
    assert [o["how"] for o in outcomes] == ["rerun", "rerun", "earlier"]
    assert "3 succeeded (1 earlier, 2 rerun)" in err


def test_a_killed_backfill_is_recovered_by_the_next(tmp_path, db_url):
    cwd, killed = hanging(tmp_path, db_url, "2026-11-01T02:00")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(30)
    (cwd / "calls.hang").unlink()

    code, outcomes, err = finished(backfill(cwd, db_url, "2026-11-01T00:00", "2026-11-01T02:00"))
    assert code == 0, err
    assert [o["how"] for o in outcomes] == ["recovered", "ran", "ran"]
    store = Store(db_url)
    try:
        view = store.get_instance(outcomes[0]["instance_id"])
        assert [(a.attempt, a.status) for a in view.steps] == [(1, "failed"), (2, "succeeded")]
        assert view.steps[0].error.startswith("abandoned")
    finally:
        store.close()


def test_a_stalled_backfill_loses_its_tick_to_the_next_and_exits_non_zero(tmp_path, db_url):
    cwd, stalled = hanging(tmp_path, db_url, "2026-11-01T01:00")
    os.killpg(stalled.pid, signal.SIGSTOP)  # a VM pause, past the 2 s lease
    try:
        (cwd / "calls.hang").unlink()
        code, outcomes, err = finished(
            backfill(cwd, db_url, "2026-11-01T00:00", "2026-11-01T01:00")
        )
    finally:
        os.killpg(stalled.pid, signal.SIGCONT)
    assert code == 0, err
    assert [o["how"] for o in outcomes] == ["recovered", "ran"]
    code, lost, err = finished(stalled, 60)
    assert code == 1, err
    assert [(o["status"], o["how"]) for o in lost] == [("lost", "lost")], err
    store = Store(db_url)
    try:
        instances = store.list_instances(limit=10)
        assert len(instances) == 2 and {v.status for v in instances} == {"succeeded"}
        first = store.get_instance(outcomes[0]["instance_id"])
        assert [(a.attempt, a.status) for a in first.steps] == [(1, "failed"), (2, "succeeded")]
    finally:
        store.close()


def test_stopping_a_backfill_exits_non_zero_and_says_what_was_not_reached(tmp_path, db_url):
    _, proc = hanging(tmp_path, db_url, "2026-11-01T09:00")
    proc.send_signal(signal.SIGTERM)
    code, outcomes, err = finished(proc, 60)
    assert code == 1
    assert [(o["status"], o["how"], o["detail"]) for o in outcomes] == [
        ("cancelled", "ran", "stopped by SIGTERM"),
        ("not run", "stopped", "stopped by SIGTERM"),
    ]
    assert "8 ticks not reached" in err


def test_engine_cancel_of_one_instance_cancels_it_and_the_backfill_goes_on(tmp_path, db_url):
    cwd, proc = hanging(tmp_path, db_url, "2026-11-01T02:00")
    (cwd / "calls.hang").unlink()
    store = Store(db_url)
    try:
        [stuck] = store.list_instances(limit=10)
    finally:
        store.close()
    cancel = subprocess.run(
        [ENGINE, "cancel", str(stuck.id)],
        cwd=cwd,
        env={**os.environ, "ENGINE_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cancel.returncode == 0, cancel.stderr
    code, outcomes, err = finished(proc, 60)
    assert code == 1, err
    assert [(o["status"], o["how"]) for o in outcomes] == [
        ("cancelled", "ran"),
        ("succeeded", "ran"),
        ("succeeded", "ran"),
    ]


def test_a_skip_reason_that_looks_like_markup_prints_as_text(tmp_path, db_url):
    cwd = project(tmp_path)
    store = Store(db_url)
    try:
        tick = datetime(2026, 11, 1, tzinfo=UTC)
        store.ticks.skip("hourly", tick, "cron", "scheduler-x", "cannot start: [/bold] \x1b[31m")
    finally:
        store.close()
    code, outcomes, err = finished(backfill(cwd, db_url, "2026-11-01T00:00", "2026-11-01T00:00"))
    assert code == 0, err
    assert [o["how"] for o in outcomes] == ["took over"]
    assert "skipped earlier: cannot start: [/bold] \\x1b[31m" in " ".join(err.split())
    assert "\x1b" not in err and "Traceback" not in err


def test_backfill_into_the_future_is_refused(tmp_path):
    cwd = project(tmp_path)
    code, _, err = finished(
        backfill(cwd, f"sqlite:///{tmp_path / 'e.db'}", "2026-01-01", "2999-01-01"), 60
    )
    assert code == 2
    assert "is in the future: backfill runs past ticks only" in err
