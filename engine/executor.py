"""The executor: runs one instance of a definition to its end.

Event-driven: each step keeps a count of upstream steps still running; a step's end decrements its
downstream counts, and a count reaching zero makes that step ready. Nothing rescans the graph, so
a run costs time linear in steps plus edges.

Each round of the loop writes, in one transaction, the attempts that ended and the attempts about
to start, and only then hands the new attempts to the dispatcher: a result is durable before any
step that depends on it starts.
"""

from __future__ import annotations

import heapq
import logging
import queue
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.definition import LoadedDefinition
from engine.dispatch.base import Dispatcher, StepOutcome, StepTask
from engine.errors import LeaseLost
from engine.execution import Cancellation, Listener, Outcome, PriorAttempt, StepEvent
from engine.expressions import TemplateTree
from engine.jsondata import storable_text
from engine.lease import Lease
from engine.status import InstanceStatus, StepStatus
from engine.step_state import StepState, step_states
from engine.store import AttemptEnd, AttemptStart, Store
from engine.store.attempts import AttemptWriter
from engine.store.types import utcnow

log = logging.getLogger(__name__)


@dataclass(order=True)
class _Timer:
    due: float
    index: int
    step: str = field(compare=False)
    attempt: int = field(compare=False)


class Executor:
    """Runs one instance: readiness, conditions, joins, retries, timeouts, concurrency."""

    def __init__(
        self,
        loaded: LoadedDefinition,
        store: Store,
        dispatcher: Dispatcher,
        *,
        instance_id: int,
        params: dict[str, Any],
        run: dict[str, Any],
        lease: Lease,
        listener: Listener | None = None,
        cancellation: Cancellation | None = None,
        history: Mapping[str, PriorAttempt] | None = None,
    ) -> None:
        self.definition = loaded.definition
        self.store = store
        self.dispatcher = dispatcher
        self.instance_id = instance_id
        self.params = params
        self.run_info = run
        self.listener = listener
        self.concurrency = self.definition.concurrency
        self.states = step_states(loaded)
        self.scope: dict[str, Any] = {"params": params, "run": run, "steps": {}}
        self._outcomes: queue.SimpleQueue[StepOutcome | None] = queue.SimpleQueue()
        """Outcomes from the dispatcher; None only wakes the loop (a cancellation)."""
        self._runnable: list[tuple[int, str]] = []
        self._retries: list[_Timer] = []
        self._deadlines: list[_Timer] = []
        self._in_flight: dict[str, StepTask] = {}
        self._ends: list[AttemptEnd] = []
        self._starts: list[AttemptStart] = []
        self._unwritten: tuple[list[AttemptEnd], list[AttemptStart]] = ([], [])
        self.lease = lease
        self.history = dict(history or {})
        self.cancellation = cancellation or Cancellation()
        self.cancellation.subscribe(lambda: self._outcomes.put(None))

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Run the instance to its end.

        Raises LeaseLost, having stopped its attempts and written nothing more, once another
        process holds the instance (found by the heartbeat, or by a fenced write).
        """
        lease = self.lease
        with self.store.attempt_writer(self.instance_id, lease.owner, lease.seconds) as writer:
            try:
                self._settle(self._resume_history())
                while self.cancellation.reason is None:
                    self._check_lease()
                    tasks = self._start_runnable()
                    self._flush(writer)
                    for task in tasks:
                        self.dispatcher.submit(task, self._outcomes.put)
                    if not (self._in_flight or self._retries or self._runnable):
                        break
                    self._wait()
                self._check_lease()
                if self.cancellation.reason is not None:
                    self._end_in_flight(StepStatus.cancelled, self.cancellation.reason)
                    self._flush(writer)
                    return Outcome(InstanceStatus.cancelled, self.cancellation.reason)
            except LeaseLost:
                for task in self._in_flight.values():
                    self.dispatcher.cancel(task)
                raise
            except KeyboardInterrupt:  # no signal handler installed: stop as if cancelled
                self._abandon(writer, StepStatus.cancelled, "interrupted")
                return Outcome(InstanceStatus.cancelled, "interrupted")
            except BaseException as exc:
                self._abandon(writer, StepStatus.failed, f"engine error: {exc!r}")
                raise
        return self._outcome()

    def _check_lease(self) -> None:
        if self.cancellation.lease_lost is not None:
            raise LeaseLost(self.cancellation.lease_lost)

    def _resume_history(self) -> list[str]:
        """Take the steps that already succeeded as ended; return the steps ready to decide.

        Attempt numbers continue after the last attempt of each step. A resumed instance runs
        again only what did not succeed: succeeded steps keep their results and feed the rest.
        """
        for step, prior in self.history.items():
            state = self.states.get(step)
            if state is None:
                continue
            state.attempt = prior.attempt
        for step, prior in self.history.items():
            if step in self.states and prior.status is StepStatus.succeeded:
                self._end(self.states[step], StepStatus.succeeded, prior.result)
        return [s.id for s in self.states.values() if s.waiting == 0 and s.status is None]

    def _flush(self, writer: AttemptWriter) -> None:
        """Write this round's rows; until they are committed, they are kept in `_unwritten`."""
        self._unwritten = (self._ends, self._starts)
        self._ends, self._starts = [], []
        writer.record(*self._unwritten)
        self._unwritten = ([], [])

    def _abandon(self, writer: AttemptWriter, status: StepStatus, error: str) -> None:
        """Best effort after the loop broke: end every open attempt so that none stays running.

        Updates can be repeated, inserts cannot: if writing everything fails (the round that broke
        may have been committed after all, or may hold the fault), the ends alone are written.
        """
        self._end_in_flight(status, error)
        ends = self._unwritten[0] + self._ends
        starts = self._unwritten[1] + self._starts
        for rows in ((ends, starts), (ends, [])):
            try:
                writer.record(*rows)
                return
            except Exception:
                continue

    def _wait(self) -> None:
        """Block until an outcome arrives or a retry or deadline falls due; handle what did."""
        timers = [t.due for t in (self._retries[:1] + self._deadlines[:1])]
        timeout = max(0.0, min(timers) - time.monotonic()) if timers else None
        try:
            self._handle(self._outcomes.get(timeout=timeout))
            while True:
                self._handle(self._outcomes.get_nowait())
        except queue.Empty:
            pass
        now = time.monotonic()
        while self._retries and self._retries[0].due <= now:
            timer = heapq.heappop(self._retries)
            heapq.heappush(self._runnable, (timer.index, timer.step))
        while self._deadlines and self._deadlines[0].due <= now:
            timer = heapq.heappop(self._deadlines)
            task = self._in_flight.get(timer.step)
            if task is not None and task.attempt == timer.attempt:
                self.dispatcher.cancel(task)
                limit = self.states[timer.step].timeout
                self._handle(
                    StepOutcome(
                        task, ok=False, error=f"timeout: the attempt ran longer than {limit:g}s"
                    )
                )

    def _outcome(self) -> Outcome:
        failed = [
            s.id
            for s in self.states.values()
            if s.status is StepStatus.failed and not s.allow_failure
        ]
        if failed:
            return Outcome(InstanceStatus.failed, "failed steps: " + ", ".join(failed))
        return Outcome(InstanceStatus.succeeded)

    # -- starting ---------------------------------------------------------------------------

    def _start_runnable(self) -> list[StepTask]:
        tasks = []
        while self._runnable and len(self._in_flight) < self.concurrency:
            _, step = heapq.heappop(self._runnable)
            state = self.states[step]
            try:
                inputs = (
                    state.inputs.render(self.scope)
                    if isinstance(state.inputs, TemplateTree)
                    else state.inputs
                )
            except Exception as exc:
                self._settle(self._fail_before_start(state, f"inputs: {exc}"))
                continue
            state.attempt += 1
            task = StepTask(
                instance_id=self.instance_id,
                step_id=step,
                attempt=state.attempt,
                runner=state.runner,
                inputs=inputs,
                params=self.params,
                results={
                    up.source: self.scope["steps"][up.source]["result"] for up in state.incoming
                },
                run=self.run_info,
                timeout=state.timeout,
                queue=state.queue,
            )
            now = utcnow()
            self._starts.append(AttemptStart(step, state.attempt, StepStatus.running, now))
            self._in_flight[step] = task
            if state.timeout is not None:
                heapq.heappush(
                    self._deadlines,
                    _Timer(time.monotonic() + state.timeout, state.index, step, state.attempt),
                )
            self._emit(StepEvent(step, state.attempt, StepStatus.running, now))
            tasks.append(task)
        return tasks

    def _fail_before_start(self, state: StepState, error: str) -> list[str]:
        """A step whose condition or inputs could not be evaluated fails without a runner call.

        Returns the downstream steps that became ready.
        """
        state.attempt += 1
        now = utcnow()
        error = storable_text(error)
        self._starts.append(
            AttemptStart(state.id, state.attempt, StepStatus.failed, now, now, None, error)
        )
        self._emit(StepEvent(state.id, state.attempt, StepStatus.failed, now, error))
        return self._end(state, StepStatus.failed, None)

    # -- ending -----------------------------------------------------------------------------

    def _handle(self, outcome: StepOutcome | None) -> None:
        if outcome is None:
            return  # a wake-up: the loop looks at the cancellation
        task = outcome.task
        current = self._in_flight.get(task.step_id)
        if current is None or current.attempt != task.attempt:
            return  # a late outcome of an attempt already ended (timed out)
        del self._in_flight[task.step_id]
        state = self.states[task.step_id]
        now = utcnow()
        if outcome.ok:
            self._ends.append(
                AttemptEnd(state.id, task.attempt, StepStatus.succeeded, now, outcome.result)
            )
            self._emit(StepEvent(state.id, task.attempt, StepStatus.succeeded, now))
            self._settle(self._end(state, StepStatus.succeeded, outcome.result))
            return
        self._ends.append(
            AttemptEnd(state.id, task.attempt, StepStatus.failed, now, None, outcome.error)
        )
        if task.attempt < state.retry.max_attempts:
            delay = state.retry.delay(task.attempt)
            heapq.heappush(
                self._retries, _Timer(time.monotonic() + delay, state.index, state.id, task.attempt)
            )
            self._emit(
                StepEvent(
                    state.id, task.attempt, StepStatus.failed, now, outcome.error, retry_in=delay
                )
            )
            return
        self._emit(StepEvent(state.id, task.attempt, StepStatus.failed, now, outcome.error))
        self._settle(self._end(state, StepStatus.failed, None))

    def _end(self, state: StepState, status: StepStatus, result: Any) -> list[str]:
        """Record a step's final status; return the downstream steps that became ready."""
        state.status = status
        self.scope["steps"][state.id] = {"result": result, "status": status.value}
        ready = []
        for target in state.downstream:
            downstream = self.states[target]
            downstream.waiting -= 1
            if downstream.waiting == 0 and downstream.status is None:  # not ended before a resume
                ready.append(target)
        return ready

    def _settle(self, ready: list[str]) -> None:
        """Decide each ready step: runnable, or skipped (which may make further steps ready)."""
        work = deque(ready)
        while work:
            state = self.states[work.popleft()]
            try:
                runs = state.should_run(self.scope)
            except Exception as exc:
                work.extend(self._fail_before_start(state, f"condition: {exc}"))
                continue
            if runs:
                heapq.heappush(self._runnable, (state.index, state.id))
                continue
            state.attempt += 1
            now = utcnow()
            self._starts.append(AttemptStart(state.id, state.attempt, StepStatus.skipped, now, now))
            self._emit(StepEvent(state.id, state.attempt, StepStatus.skipped, now))
            work.extend(self._end(state, StepStatus.skipped, None))

    def _end_in_flight(self, status: StepStatus, error: str) -> None:
        """Stop every running attempt (its runner is asked to stop) and record its end."""
        now = utcnow()
        for task in self._in_flight.values():
            self.dispatcher.cancel(task)
            self._ends.append(AttemptEnd(task.step_id, task.attempt, status, now, None, error))
            self._emit(StepEvent(task.step_id, task.attempt, status, now, error))
        self._in_flight.clear()

    def _emit(self, event: StepEvent) -> None:
        """Tell the listener; a listener that fails (a progress display) never fails the run."""
        if self.listener is not None:
            try:
                self.listener(event)
            except Exception:
                log.exception("instance %d: the listener failed on %s", self.instance_id, event)
