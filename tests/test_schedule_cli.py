"""`engine schedule` and `engine backfill` as real processes on SQLite and PostgreSQL.

Every-second crons give real ticks without sleeping through minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from engine.store import Store
from engine.store.types import utcnow

ENGINE = str(Path(sys.executable).parent / "engine")

RUNNERS = """
import time
from engine import job_handler

@job_handler("echo")
def echo(inputs, ctx):
    return inputs

@job_handler("slow")
def slow(inputs, ctx):
    for _ in range(int(inputs.get("seconds", 30) * 20)):
        if ctx.cancelled:
            raise RuntimeError("told to stop")
        time.sleep(0.05)
    return {"done": True}
"""


def project(tmp_path: Path, cron: str, runner: str = "echo", overlap: str = "allow") -> Path:
    (tmp_path / "runners").mkdir(exist_ok=True)
    (tmp_path / "runners" / "demo.py").write_text(RUNNERS)
    (tmp_path / "defs").mkdir(exist_ok=True)
    (tmp_path / "defs" / "tick.yaml").write_text(
        f"""
name: tick
cron: "{cron}"
overlap: {overlap}
steps:
  - {{id: a, runner: {runner}, inputs: {{at: "{{{{ run.scheduled_for }}}}"}}}}
"""
    )
    return tmp_path


def engine(cwd: Path, db_url: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "ENGINE_DATABASE_URL": db_url, "ENGINE_LEASE_SECONDS": "2"}
    return subprocess.Popen(
        [ENGINE, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def claimed(url: str) -> list[datetime]:
    """The ticks claimed so far, in order."""
    store = Store(url)
    try:
        return sorted(c.scheduled_for for c in store.ticks.recent("tick", limit=10_000))
    finally:
        store.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stop(procs: list[subprocess.Popen], timeout: float = 60) -> list[tuple[int, str]]:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    return [(p.wait(timeout), p.communicate()[1]) for p in procs]


def test_three_schedulers_fire_every_tick_exactly_once(tmp_path, db_url):
    cwd = project(tmp_path, "* * * * * *")
    Store(db_url).close()  # create the schema before the race
    procs = [engine(cwd, db_url, "schedule", "defs") for _ in range(3)]
    wait_until(lambda: len(claimed(db_url)) >= 7, "seven ticks")
    ends = stop(procs)
    assert [code for code, _ in ends] == [0, 0, 0], ends

    store = Store(db_url)
    claims = store.ticks.recent("tick", limit=10_000)
    instances = store.list_instances("tick", limit=10_000)
    store.close()
    ticks = sorted(c.scheduled_for for c in claims)
    span = int((ticks[-1] - ticks[0]).total_seconds()) + 1
    per_tick = Counter(v.scheduled_for for v in instances)
    owners = Counter(c.claimed_by for c in claims)
    print(
        f"\n3 schedulers: {len(ticks)} ticks over {span} s, {len(instances)} instances, "
        f"claims per scheduler {sorted(owners.values())}"
    )
    assert len(ticks) >= 5
    assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(span)], "no tick missed"
    assert set(per_tick.values()) == {1} and len(per_tick) == len(ticks), "one instance each"
    assert all(c.skipped_reason is None for c in claims)
    assert {v.status for v in instances} == {"succeeded"}


def test_sigterm_stops_claiming_and_leaves_a_long_run_resumable(tmp_path, db_url):
    cwd = project(tmp_path, "* * * * * *", runner="slow", overlap="skip")
    proc = engine(cwd, db_url, "schedule", "defs", "--grace", "0.5")
    store = Store(db_url)
    deadline = time.monotonic() + 30
    while not store.list_instances("tick", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
    [(code, err)] = stop([proc])
    stopped_at = utcnow()
    assert code == 0, err
    assert "no new ticks are claimed" in err
    [view] = store.list_instances("tick")
    assert view.status == "cancelled" and "engine resume" in view.error
    assert all(c.claimed_at < stopped_at for c in store.ticks.recent("tick", 1000))

    (cwd / "runners" / "demo.py").write_text(RUNNERS.replace('get("seconds", 30)', 'get("s", 0)'))
    resumed = subprocess.run(
        [ENGINE, "resume", str(view.id), "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "ENGINE_DATABASE_URL": db_url},
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
    store.close()


def test_schedule_list_prints_the_next_fire_times(tmp_path):
    cwd = project(tmp_path, "30 2 * * *")
    (cwd / "defs" / "tick.yaml").write_text(
        (cwd / "defs" / "tick.yaml").read_text().replace("overlap", "timezone: Asia/Seoul\noverlap")
    )
    done = subprocess.run(
        [ENGINE, "schedule", "--list", "--count", "2", "defs"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "tick  30 2 * * *  (Asia/Seoul)"
    local, utc = lines[1].split()
    assert local.endswith("T02:30:00+09:00") and utc.endswith("T17:30:00+00:00")
    assert datetime.fromisoformat(local) > utcnow()


def test_schedule_list_reads_shorthands(tmp_path):
    cwd = project(tmp_path, "@daily")
    done = subprocess.run(
        [ENGINE, "schedule", "--list", "--count", "2", "defs"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    header, *ticks = done.stdout.splitlines()
    assert header == "tick  @daily  (UTC)"
    first, second = (datetime.fromisoformat(line.split()[1]) for line in ticks)
    assert first.time() == second.time() == datetime.min.time()
    assert second - first == timedelta(days=1) and first > utcnow()


def test_validate_refuses_a_cron_that_never_fires_at_its_line_and_column(tmp_path):
    cwd = project(tmp_path, "0 0 30 2 *")
    done = subprocess.run(
        [ENGINE, "validate", "defs"], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    expected = "cron expression '0 0 30 2 *' never fires: no calendar date matches it"
    assert f"defs/tick.yaml:3:7: {expected}" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    leap = project(tmp_path, "0 0 29 2 *")
    done = subprocess.run(
        [ENGINE, "validate", "defs"], cwd=leap, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_schedule_refuses_paths_without_a_cron(tmp_path):
    cwd = project(tmp_path, "* * * * *")
    (cwd / "defs" / "tick.yaml").write_text("name: x\nsteps: [{id: a, runner: echo}]\n")
    done = subprocess.run(
        [ENGINE, "schedule", "defs"], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no definition has a cron"


class Proxy:
    """A TCP proxy to PostgreSQL that can be cut and restored: a database outage."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket
        import threading

        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.up = threading.Event()
        self.up.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            client, _ = self.listener.accept()
            if not self.up.is_set():
                client.close()
                continue
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        import socket

        self.up.clear()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()


def test_the_scheduler_rides_out_a_database_outage(tmp_path):
    from conftest import _postgres_schema_url
    from sqlalchemy.engine import make_url

    urls = _postgres_schema_url()
    direct = next(urls)
    url = make_url(direct)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        cwd = project(tmp_path, "* * * * * *")
        Store(direct).close()
        proc = engine(cwd, through, "schedule", "defs")
        wait_until(lambda: len(claimed(direct)) >= 2, "ticks before the outage")
        proxy.cut()
        outage_from = utcnow()
        outage = 4.0  # the outage itself lasts this long, on purpose
        time.sleep(outage)
        proxy.up.set()
        after = outage_from + timedelta(seconds=outage + 1)
        wait_until(lambda: claimed(direct)[-1] > after, "a tick after the outage")
        [(code, err)] = stop([proc])
        assert code == 0, err
        assert "round failed" in err
        store = Store(direct)
        ticks = sorted(c.scheduled_for for c in store.ticks.recent("tick", 1000))
        store.close()
        span = int((ticks[-1] - ticks[0]).total_seconds()) + 1
        assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(span)], "none lost"
        assert ticks[0] < outage_from < outage_from + timedelta(seconds=outage) < ticks[-1]
    finally:
        next(urls, None)
