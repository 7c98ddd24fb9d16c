"""What the engine tells its metrics, and whether anyone listens.

Only the processes that serve metrics record them: `engine serve` (`enable`, then `/metrics`)
and `engine worker --metrics-port` (`serving_worker`). Everywhere else the recorder is the base
`Recorder`, which records nothing, so that `engine run` pays one call per instance and none per
step, and never imports prometheus_client. `engine.metrics.prometheus` holds the metrics
themselves; docs/operations.md (Metrics) lists them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Literal

from engine.execution import Listener
from engine.status import InstanceStatus

RESUMED = "resume"
"""The `trigger` of a run of an instance that ran before (`engine resume`, a recovery): its
instance keeps its own trigger, but counting it as started by that again would count it twice."""

SkipReason = Literal["overlap", "missed", "unstartable"]
"""Why a scheduler skipped a tick, in one word: the full reason is stored with the tick."""
RecoveryOutcome = Literal["resumed", "started", "given_up"]


class RunRecord:
    """One run of an instance in this process, as the metrics see it; this one sees nothing.

    Used as `with record:` around the executor: leaving the block says that none of its
    attempts is in flight any more, whichever way it stopped (a lost lease tells no event).
    """

    def listener(self, listener: Listener | None) -> Listener | None:
        """What the executor should tell: the caller's `listener`, and this record."""
        return listener

    def ended(self, status: InstanceStatus) -> None:
        """The instance ended, with `status`."""

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class Recorder:
    """Where the engine reports what its metrics count; this base counts nothing."""

    def run(self, definition: str, trigger: str) -> RunRecord:
        """A run of an instance of `definition` starts here, by `trigger` (or `RESUMED`)."""
        return _NO_RUN

    def tick_claimed(self, definition: str) -> None:
        """A scheduler of this process claimed a cron tick and created its instance."""

    def tick_skipped(self, definition: str, reason: SkipReason) -> None:
        """A scheduler of this process recorded a cron tick as skipped."""

    def recovery(self, outcome: RecoveryOutcome) -> None:
        """Recovery adopted an orphan: resumed a running one, or started a pending one; or
        failed one abandoned more than `ENGINE_MAX_RECOVERIES` times (`given_up`)."""

    def worker_attempt(self, runner: str, ok: bool, seconds: float) -> None:
        """A worker ran one attempt of `runner` to its end."""

    def exposition(self, accept: str) -> tuple[bytes, str] | None:
        """The metrics and their content type, in the format the `Accept` header asks for
        (Prometheus' text format by default, or OpenMetrics); None when nothing is recorded."""
        return None


_NO_RUN = RunRecord()
_recorder = Recorder()

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def recorder() -> Recorder:
    """The recorder of this process: the base one unless metrics were enabled."""
    return _recorder


def enable() -> None:
    """Record from now on, in a registry of this process's own (`engine serve`)."""
    global _recorder
    from engine.metrics.prometheus import ServerRecorder

    if not isinstance(_recorder, ServerRecorder):
        _recorder = ServerRecorder()


@contextlib.contextmanager
def serving_worker(host: str, port: int) -> Iterator[str]:
    """Serve a Celery worker's metrics on `host:port` while the block runs; yields their URL.

    The attempts run in the worker's pool processes, forked later from this one: each writes
    its counts into files of its own in a temporary folder, which this process sums when
    scraped (prometheus_client's multiprocess mode). That mode is chosen when prometheus_client
    is first imported, hence the folder is named in the environment before.
    """
    global _recorder
    with tempfile.TemporaryDirectory(prefix="engine-worker-metrics-") as folder:
        os.environ[MULTIPROCESS_ENV] = folder
        from engine.metrics.prometheus import WorkerRecorder, serve_folder

        server = serve_folder(folder, host, port)
        _recorder = WorkerRecorder()
        try:
            yield f"http://{host}:{server.server_port}/metrics"
        finally:
            server.shutdown()
