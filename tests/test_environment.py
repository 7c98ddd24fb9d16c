"""Every `ENGINE_*` variable with a value the engine cannot use is refused before anything is
stored: exit 2, a message naming the variable, no traceback, no instance."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = str(Path(sys.executable).with_name("engine"))

BAD = [
    ("ENGINE_LEASE_SECONDS", "abc"),
    ("ENGINE_LEASE_SECONDS", "nan"),
    ("ENGINE_LEASE_SECONDS", "inf"),
    ("ENGINE_LEASE_SECONDS", "0"),
    ("ENGINE_LEASE_SECONDS", "-1"),
    ("ENGINE_MAX_RECOVERIES", "-1"),
    ("ENGINE_MAX_RECOVERIES", "1.5"),
    ("ENGINE_MAX_RESULT_BYTES", "0"),
    ("ENGINE_MAX_RESULT_BYTES", "1e9"),
    ("ENGINE_MAX_RESULT_BYTES", "268435457"),  # past what a database column may safely hold
    ("ENGINE_LOG_LIMIT", "-1"),
    ("ENGINE_LOG_LIMIT", "1.5"),
    ("ENGINE_WORKER_LOST_SECONDS", "soon"),
    ("ENGINE_DISPATCHER", "threads"),
    ("ENGINE_API_TRACEBACKS", "yes"),
    ("ENGINE_PARAMS_KEY", "not-a-fernet-key"),
    ("ENGINE_DATABASE_URL", "nosuchdb://x"),
    ("ENGINE_RUNNERS", "no_such_runner_module"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_value_is_refused_before_anything_is_stored(tmp_path, name, value):
    (tmp_path / "one.yaml").write_text("name: one\nsteps:\n  - {id: a, runner: noop}\n")
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "noop.py").write_text(
        "from engine import job_handler\n\n@job_handler('noop')\ndef noop(inputs, ctx):\n"
        "    return 1\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env[name] = value
    done = subprocess.run(
        [ENGINE, "run", "one.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert name in done.stderr or value in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    db = tmp_path / "engine.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "batch_instance" in tables:
                assert conn.execute("SELECT count(*) FROM batch_instance").fetchone() == (0,)
