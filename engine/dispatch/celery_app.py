"""The Celery side that the orchestrator and `engine worker` share: the app, its settings, and the
task that runs one attempt on a worker.

A worker only computes: it calls the runner exactly as the direct dispatcher does and returns the
outcome as plain JSON. While it runs, it beats (stores a STARTED state with the time every
`HEARTBEAT_SECONDS`), so that the orchestrator notices a lost worker in bounded time whatever the
broker's redelivery delay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from engine.config import BROKER_URL_ENV, RESULT_BACKEND_ENV
from engine.dispatch.base import StepOutcome, StepTask
from engine.dispatch.calling import run_attempt
from engine.errors import DispatchError
from engine.registry import JobRegistry
from engine.secret_params import SecretParams

TASK_NAME = "engine.run_step"
DEFAULT_QUEUE = "default"
"""Where a step without `queue` goes, and what `engine worker` listens on by default."""
HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS
"""A worker takes a run whose heartbeat has not changed for this long for dead."""
CONNECT_SECONDS = 5.0
"""How long connecting to the broker or the result backend may take before it is an error."""
VISIBILITY_TIMEOUT = 3600
"""Redis only: seconds before a message taken by a worker that died is delivered again."""
INSTALL_HINT = "the celery dispatcher needs Celery: pip install 'engine[celery]'"

_REDIS_SCHEMES = ("redis", "rediss")
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


Observer = Callable[[StepOutcome, float], None]
"""Told of each attempt a worker ran, with its seconds."""


def broker_url(url: str | None = None) -> str:
    """The broker URL given, else `$ENGINE_BROKER_URL`; a redis:// or amqp:// one."""
    url = url or os.environ.get(BROKER_URL_ENV)
    if not url:
        raise DispatchError(f"the celery dispatcher needs a broker: set {BROKER_URL_ENV}")
    if url.partition("://")[0] not in _REDIS_SCHEMES + _AMQP_SCHEMES:
        raise DispatchError(f"{BROKER_URL_ENV} must be a redis:// or amqp:// URL, not {url!r}")
    return url


def result_backend(broker: str, url: str | None = None) -> str:
    """Redis keeps results in the broker itself; with RabbitMQ they come back as messages to the
    process that sent the task (`rpc://`), which is the one orchestrator waiting for them."""
    url = url or os.environ.get(RESULT_BACKEND_ENV)
    if not url:
        url = broker if broker.partition("://")[0] in _REDIS_SCHEMES else "rpc://"
    if url.partition("://")[0] in _REDIS_SCHEMES:
        return f"{__name__}:UnsubscribedRedisBackend+{url}"
    return url


def make_app(
    broker: str | None = None,
    backend: str | None = None,
    registry: JobRegistry | None = None,
    observe: Observer | None = None,
) -> Any:
    """A Celery app on the broker; with a registry (a worker), it can also run attempts, each
    told to `observe` with its duration once it has ended (the worker's metrics).

    Raises:
        DispatchError: Celery is not installed, or the URLs are missing or wrong.
    """
    try:
        import celery
    except ImportError:
        raise DispatchError(INSTALL_HINT) from None
    broker = broker_url(broker)
    app = celery.Celery("engine", broker=broker, backend=result_backend(broker, backend))
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=DEFAULT_QUEUE,
        # a message is acknowledged once its attempt has ended, so a worker's death leaves it to
        # the broker; but a dead pool process fails its attempt rather than putting the message
        # back, which would run a runner that kills its process for ever
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_timeout=CONNECT_SECONDS,
        broker_connection_retry_on_startup=False,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        redis_socket_connect_timeout=CONNECT_SECONDS,
        redis_backend_health_check_interval=30,
        # outcomes are in the result backend, not in the pool's pipe: a dead pool process's
        # message can go back to the queue at once
        worker_lost_wait=2.0,
        result_expires=86400,
    )
    if registry is not None:
        _register_task(app, registry, observe)
    return app


def check_broker(app: Any) -> None:
    """Connect to the broker (and a Redis result backend) once, or fail in bounded time.

    Raises:
        DispatchError: naming the unreachable URL (without its password).
    """
    from kombu.utils.url import maybe_sanitize_url

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0.5, interval_step=0.5, timeout=CONNECT_SECONDS
            )
    except Exception as exc:
        url = maybe_sanitize_url(app.conf.broker_url)
        raise DispatchError(f"the broker at {url} is unreachable: {exc}") from None
    client = getattr(app.backend, "client", None)  # Redis; rpc:// rides on the broker
    try:
        if client is not None:
            client.ping()
    except Exception as exc:
        url = maybe_sanitize_url(app.backend.url)
        raise DispatchError(f"the result backend at {url} is unreachable: {exc}") from None


def _register_task(app: Any, registry: JobRegistry, observe: Observer | None) -> None:
    from celery.backends.base import KeyValueStoreBackend
    from celery.exceptions import Ignore

    @app.task(name=TASK_NAME, bind=True)  # type: ignore[untyped-decorator]
    def run_step(self: Any, **fields: Any) -> dict[str, Any]:
        """Run one attempt here, unless it must not run (see `_may_run`). With rpc:// a worker
        cannot read states, but then RabbitMQ redelivers only once a worker's connection is gone."""
        task_id, request, backend = self.request.id, self.request, self.backend
        if isinstance(backend, KeyValueStoreBackend) and not _may_run(backend, task_id):
            raise Ignore()
        stop = threading.Event()
        beats = threading.Thread(
            target=_beat, args=(backend, task_id, request, stop), name="engine-heartbeat"
        )
        beats.start()
        try:
            started = time.monotonic()
            outcome = run_attempt(registry, from_wire(fields))
            if observe is not None:
                observe(outcome, time.monotonic() - started)
            logs = [line.to_wire() for line in outcome.logs]
            return {
                "ok": outcome.ok,
                "result": outcome.result,
                "error": outcome.error,
                "logs": logs,
            }
        finally:
            stop.set()
            beats.join()  # a beat stored after the result would hide the result


def to_wire(task: StepTask) -> dict[str, Any]:
    """A task as a Celery message carries it: its secret params sealed, never in plain text
    (and no such field without any, which workers of older engines would not take)."""
    fields = asdict(dataclasses.replace(task, secret_params=None))
    del fields["secret_params"]
    if task.secret_params is not None:
        fields["secret_params"] = task.secret_params.to_wire()
    return fields


def from_wire(fields: dict[str, Any]) -> StepTask:
    """A task as a worker runs it: its secret params unsealed with the worker's own key."""
    wire = fields.pop("secret_params", None)
    secret = None if wire is None else SecretParams.from_wire(wire)
    return StepTask(**fields, secret_params=secret)


def _may_run(backend: Any, task_id: str) -> bool:
    """Whether a delivered attempt may run here. Not when it has ended (done, revoked, or given
    up as lost by the orchestrator); not while another process beats for it (a message that Redis
    redelivered after its visibility timeout, its first run still going): then this waits for
    that run to end or to stop beating for `STALE_SECONDS`, by this process's own clock."""
    from celery.states import READY_STATES

    seen, since = None, time.monotonic()
    while True:
        meta = backend.get_task_meta(task_id, cache=False)
        if meta["status"] in READY_STATES:
            return False
        beat = (meta.get("result") or {}) if meta["status"] == "STARTED" else {}
        if not beat:
            return True
        if beat["beat"] != seen:
            seen, since = beat["beat"], time.monotonic()
        elif time.monotonic() - since > STALE_SECONDS:
            return True
        time.sleep(HEARTBEAT_SECONDS / 2)


def _beat(backend: Any, task_id: str, request: Any, stop: threading.Event) -> None:
    meta = {"hostname": request.hostname or socket.gethostname(), "pid": os.getpid()}
    while True:
        with contextlib.suppress(Exception):  # a missed beat is retried at the next
            backend.store_result(task_id, {**meta, "beat": time.time()}, "STARTED", request=request)
        if stop.wait(HEARTBEAT_SECONDS):
            return


@functools.cache
def _redis_backend_class() -> Any:
    from celery.backends.redis import RedisBackend

    class UnsubscribedRedisBackend(RedisBackend):  # type: ignore[misc]
        """The Redis result backend without its per-task pub/sub subscription: the dispatcher
        polls states in batches from one thread, and unread subscriptions would pile up."""

        def on_task_call(self, producer: Any, task_id: str) -> None:
            pass

    return UnsubscribedRedisBackend


def __getattr__(name: str) -> Any:
    # Celery resolves the backend class by this module's attribute; it is built on first use so
    # that importing this module does not import Celery.
    if name == "UnsubscribedRedisBackend":
        return _redis_backend_class()
    raise AttributeError(name)
