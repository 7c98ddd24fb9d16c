"""`engine worker` subprocesses for the Celery benchmarks, on a queue of their own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from engine.dispatch.celery_app import make_app

ENGINE = str(Path(sys.executable).with_name("engine"))
_RECEIVED = re.compile(rb"engine\.run_step\[([0-9a-f-]{36})\] received")


@contextmanager
def workers(
    broker: str,
    queue: str,
    count: int,
    concurrency: int,
    cwd: Path,
    runners: Sequence[str] = (),
) -> Iterator[None]:
    """`count` workers of `concurrency` processes, ready when this yields; stopped (SIGTERM)
    afterwards, and the results they stored forgotten.

    They find their runners in `cwd/runners/` and in `runners`; their logs go to `cwd`.
    """
    env = {**os.environ, "ENGINE_BROKER_URL": broker}
    command = [ENGINE, "worker", "-Q", queue, "-c", str(concurrency)]
    for runner in runners:
        command += ["--runners", runner]
    logs = [cwd / f"worker-{n}.log" for n in range(count)]
    procs = []
    for log in logs:
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    command, env=env, cwd=cwd, stdout=out, stderr=out, start_new_session=True
                )
            )
    try:
        for log, proc in zip(logs, procs, strict=True):
            while b" ready." not in log.read_bytes():
                if proc.poll() is not None:
                    raise SystemExit(f"a worker did not start:\n{log.read_text()}")
                time.sleep(0.1)
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        forget_results(broker, logs)


def forget_results(broker: str, logs: Sequence[Path]) -> None:
    """Delete the results stored for every task the workers' logs say they received: a Redis
    backend would keep them a day (`result_expires`), about 33 MB per 100,000 steps. The queue
    is the benchmark's own, so every such task is too. Nothing to do with `rpc://`."""
    app = make_app(broker)
    try:
        client = getattr(app.backend, "client", None)
        if client is None:
            return
        ids = {m.group(1).decode() for log in logs for m in _RECEIVED.finditer(log.read_bytes())}
        keys = [app.backend.get_key_for_task(task_id) for task_id in ids]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        app.close()
