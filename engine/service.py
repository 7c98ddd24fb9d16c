"""The one path every trigger takes: validate params, store the version, create the instance,
run it. The CLI, the scheduler and the HTTP API call this and nothing below it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine import metrics, secret_params
from engine.definition import LoadedDefinition, load_text
from engine.dispatch import Dispatcher
from engine.dispatch.secret_giving import with_secret_params
from engine.errors import IdempotencyKeyReused, IdempotencyKeyTaken, LeaseLost
from engine.execution import Cancellation, Listener, PriorAttempt
from engine.executor import Executor
from engine.lease import Heartbeat, Lease, lease_expiry
from engine.registry import JobRegistry
from engine.secret_params import SecretParams
from engine.status import InstanceStatus, StepStatus, Trigger
from engine.store import InstanceView, Store
from engine.store.ticks import ActiveRun, TickView
from engine.store.types import utcnow


@dataclass(frozen=True)
class PreparedRun:
    """A run whose params are valid: what `--dry-run` shows and `start` runs."""

    loaded: LoadedDefinition
    params: dict[str, Any]
    run: dict[str, Any]
    trigger: Trigger
    scheduled_for: datetime | None
    secret_params: SecretParams | None = None
    """The values of the secret params, which `params` shows as `***`."""

    def plan(self) -> dict[str, Any]:
        return {
            "definition": self.loaded.name,
            "version": self.loaded.version,
            "params": self.params,
            **self.loaded.graph.outline(),
        }


@dataclass(frozen=True)
class Taken:
    """An instance whose lease this process took to resume it."""

    prepared: PreparedRun
    instance_id: int
    lease: Lease


class BatchService:
    """Runs definitions against one store through one dispatcher."""

    def __init__(self, store: Store, dispatcher: Dispatcher | None = None) -> None:
        """Without a dispatcher, the service can do all but run steps (`engine cancel`)."""
        self.store = store
        self._dispatcher = dispatcher

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("this BatchService was made without a dispatcher: it runs nothing")
        return self._dispatcher

    @staticmethod
    def prepare(
        loaded: LoadedDefinition,
        params: dict[str, Any],
        trigger: Trigger = Trigger.cli,
        scheduled_for: datetime | None = None,
    ) -> PreparedRun:
        """Validate and complete params; raises ParamsError. Nothing is stored yet."""
        run = _run_info(loaded, trigger, scheduled_for, scheduled_for or utcnow())
        shown, secret = secret_params.split(
            loaded.definition.params, loaded.params.resolve(params, run)
        )
        return PreparedRun(loaded, shown, run, trigger, scheduled_for, secret)

    def start(
        self,
        prepared: PreparedRun,
        tick_claimed_by: str | None = None,
        idempotency_key: str | None = None,
        over_skipped: bool = False,
    ) -> int:
        """Store the definition version and create the instance (status pending).

        With `tick_claimed_by` (a scheduler or backfill), the tick `prepared.scheduled_for` is
        claimed with it: TickTaken when someone else has it, or, `over_skipped` (a backfill
        filling a skipped tick), when it is no longer skipped. IdempotencyKeyTaken when an
        instance already has `idempotency_key`.
        """
        loaded = prepared.loaded
        definition_id = self.store.save_definition(
            loaded.name,
            loaded.version,
            loaded.definition.cron,
            [
                s.model_dump(mode="json", by_alias=True, exclude_unset=True)
                for s in loaded.definition.steps
            ],
            loaded.source,
        )
        return self.store.create_instance(
            definition_id,
            loaded.name,
            prepared.trigger.value,
            prepared.params,
            prepared.scheduled_for,
            tick_claimed_by,
            idempotency_key,
            lease_expiry(),
            over_skipped,
            sealed_params=prepared.secret_params.sealed() if prepared.secret_params else None,
        )

    def start_once(
        self, prepared: PreparedRun, given: dict[str, Any], idempotency_key: str
    ) -> tuple[int, bool]:
        """Start, unless an instance was started under `idempotency_key`: then return that one.

        Returns (instance id, created). A key sent again with another definition, or with a
        given param whose value differs, raises IdempotencyKeyReused. Racing requests with one
        key get one instance: the key is unique in the database.
        """
        existing = self.store.instance_by_key(idempotency_key)
        if existing is None:
            try:
                return self.start(prepared, idempotency_key=idempotency_key), True
            except IdempotencyKeyTaken as taken:
                existing = taken.instance_id
        view = self.store.instance_head(existing)
        missing = object()
        if view.definition != prepared.loaded.name or any(
            view.params.get(name, missing) != prepared.params[name] for name in given
        ):
            raise IdempotencyKeyReused(
                f"idempotency key {idempotency_key!r} was used for instance {existing} "
                f"with another definition or other params"
            )
        return existing, False

    def execute(
        self,
        prepared: PreparedRun,
        instance_id: int,
        listener: Listener | None = None,
        cancellation: Cancellation | None = None,
    ) -> InstanceView:
        """Run a created instance to its end and return it with every attempt.

        `cancellation.cancel(reason)` stops it: no new step starts, running attempts end
        `cancelled`, and so does the instance. Raises InstanceTaken when another process took
        the instance first (a scheduler's queue, `engine resume`) or it was cancelled while
        pending.
        """
        lease = Lease(self.store, instance_id)
        self.store.leases.start(instance_id, lease.owner, lease.expiry())
        trigger = prepared.trigger.value
        return self._run_leased(prepared, instance_id, lease, listener, cancellation, {}, trigger)

    def resume(
        self,
        instance_id: int,
        registry: JobRegistry,
        listener: Listener | None = None,
        cancellation: Cancellation | None = None,
    ) -> InstanceView:
        """Run again, in the same instance, what did not succeed.

        The instance keeps the definition version and params it started with, whatever the YAML
        file says now. Steps that succeeded keep their results and are not run again; attempt
        numbers continue. Raises ResumeRefused when it succeeded or a live process runs it.
        """
        return self.run_taken(self.take(instance_id, registry), listener, cancellation)

    def cancel(self, instance_id: int) -> str:
        """Cancel an instance wherever it runs; what was done, in words.

        A live process is asked through the database (it stops at its next heartbeat); one that
        no process runs (pending, abandoned) is cancelled at once.
        """
        return self.store.leases.request_cancel(instance_id)

    def take(self, instance_id: int, registry: JobRegistry) -> Taken:
        """The first half of `resume`: take the instance's lease, or raise ResumeRefused.

        Whoever takes it must then `run_taken` it, or keep its lease renewed while it waits.
        """
        prepared = self.stored_run(instance_id, registry)
        lease = Lease(self.store, instance_id)
        self.store.leases.take(instance_id, lease.owner, lease.expiry())
        return Taken(prepared, instance_id, lease)

    def adopt(self, instance_id: int, registry: JobRegistry, max_recoveries: int) -> Taken | None:
        """Take an abandoned instance for recovery, counting it; None when another process did
        first or it was recovered `max_recoveries` times. Raises EngineError when this process
        cannot load it (a runner it lacks)."""
        prepared = self.stored_run(instance_id, registry)
        lease = Lease(self.store, instance_id)
        if not self.store.leases.adopt(instance_id, lease.owner, lease.expiry(), max_recoveries):
            return None
        return Taken(prepared, instance_id, lease)

    def adopt_pending(self, instance_id: int, registry: JobRegistry) -> PreparedRun | None:
        """Take over waiting for a pending instance whose creator died: its run, to `execute`
        when a slot is free; None when another process did first."""
        prepared = self.stored_run(instance_id, registry)
        return prepared if self.store.leases.adopt_pending(instance_id, lease_expiry()) else None

    def run_taken(
        self,
        taken: Taken,
        listener: Listener | None = None,
        cancellation: Cancellation | None = None,
    ) -> InstanceView:
        """The second half of `resume`: run what did not succeed in a taken instance."""
        instance_id = taken.instance_id
        self.store.leases.close_open_attempts(
            instance_id, taken.lease.owner, "abandoned: the process running this attempt stopped"
        )
        history = {
            step: PriorAttempt(attempt, StepStatus(status), result)
            for step, (attempt, status, result) in self.store.last_attempts(instance_id).items()
        }
        return self._run_leased(
            taken.prepared,
            instance_id,
            taken.lease,
            listener,
            cancellation,
            history,
            metrics.RESUMED,
        )

    # -- ticks: what schedulers and backfills claim -----------------------------------------

    def tick(self, name: str, at: datetime) -> TickView | None:
        """The claim of `name`'s tick `at`, with its instance's state; None when unclaimed."""
        return self.store.ticks.find(name, at)

    def last_tick(self, name: str) -> datetime | None:
        """The latest tick a scheduler claimed: where a starting scheduler takes over."""
        return self.store.ticks.last(name)

    def skip_tick(self, name: str, at: datetime, trigger: Trigger, owner: str, why: str) -> None:
        """Record the tick as skipped, with why; TickTaken when it was already claimed."""
        self.store.ticks.skip(name, at, trigger.value, owner, why)

    def scheduled_runs(self, name: str) -> list[ActiveRun]:
        """Cron and backfill instances of `name` that have not ended, oldest first."""
        return self.store.ticks.active(name)

    def stored_run(self, instance_id: int, registry: JobRegistry) -> PreparedRun:
        """An existing instance as it was prepared: its definition version, params and run."""
        record = self.store.stored_instance(instance_id)
        loaded = load_text(
            record.source, f"{record.definition_name}@{record.version[:12]}", registry
        )
        secret = secret_params.stored(
            instance_id, loaded.definition.params, record.params, record.sealed_params
        )
        run = _run_info(
            loaded,
            Trigger(record.trigger),
            record.scheduled_for,
            record.scheduled_for or record.started_at or record.created_at,
        )
        return PreparedRun(
            loaded, record.params, run, Trigger(record.trigger), record.scheduled_for, secret
        )

    def _run_leased(
        self,
        prepared: PreparedRun,
        instance_id: int,
        lease: Lease,
        listener: Listener | None,
        cancellation: Cancellation | None,
        history: dict[str, PriorAttempt],
        trigger: str,
    ) -> InstanceView:
        """Run an instance whose lease this process holds, keeping the lease renewed meanwhile.

        Every write is fenced by the lease: LeaseLost, with nothing more written, once another
        process holds the instance. Returns the ended instance without its items' attempts
        (100,000 of them are for `get_instance` to page through when asked). `trigger` is what
        the metrics count this run as started by.
        """
        cancellation = cancellation or Cancellation()
        record = metrics.recorder().run(prepared.loaded.name, trigger)
        executor = Executor(
            prepared.loaded,
            self.store,
            with_secret_params(self.dispatcher, prepared.secret_params),
            instance_id=instance_id,
            params=secret_params.in_scope(prepared.params, prepared.secret_params),
            run={**prepared.run, "id": instance_id},
            lease=lease,
            listener=record.listener(listener),
            cancellation=cancellation,
            history=history,
        )
        heartbeat = Heartbeat(
            lease, lambda: cancellation.cancel("cancelled by engine cancel"), cancellation.lose
        )
        try:
            with heartbeat, record:
                outcome = executor.run()
        except LeaseLost:
            raise
        except BaseException as exc:
            record.ended(InstanceStatus.failed)
            # Leave no instance "running" behind a crash of the executor itself.
            with contextlib.suppress(LeaseLost):
                self.store.leases.finish(
                    instance_id,
                    lease.owner,
                    InstanceStatus.failed,
                    f"engine error: {type(exc).__name__}: {exc}",
                )
            raise
        self.store.leases.finish(instance_id, lease.owner, outcome.status, outcome.error)
        record.ended(outcome.status)
        return self.store.get_instance(instance_id, items=False)

    def run(
        self,
        prepared: PreparedRun,
        listener: Listener | None = None,
        cancellation: Cancellation | None = None,
        *,
        started: Callable[[int], None] | None = None,
        tick_claimed_by: str | None = None,
        over_skipped: bool = False,
    ) -> InstanceView:
        """`start` then `execute`: a run this process waits for (`engine run`, a backfill's
        tick). `started` hears the instance id before any step runs."""
        instance_id = self.start(
            prepared, tick_claimed_by=tick_claimed_by, over_skipped=over_skipped
        )
        if started is not None:
            started(instance_id)
        return self.execute(prepared, instance_id, listener, cancellation)


def _run_info(
    loaded: LoadedDefinition,
    trigger: Trigger,
    scheduled_for: datetime | None,
    logical: datetime,
) -> dict[str, Any]:
    """What templates see as `run` (the instance id is added once it exists).

    Times are in the definition's time zone, so that `run.logical_date[:10]` is the day the
    cron tick fell on where the schedule is defined.
    """
    zone = ZoneInfo(loaded.definition.timezone)
    return {
        "id": None,
        "trigger": trigger.value,
        "scheduled_for": scheduled_for.astimezone(zone).isoformat() if scheduled_for else None,
        "logical_date": logical.astimezone(zone).isoformat(),
    }
