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
import queue
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.definition import LoadedDefinition, MapPlan
from engine.dispatch.base import Dispatcher, StepOutcome, StepTask
from engine.errors import LeaseLost
from engine.execution import Cancellation, Listener, Outcome, PriorAttempt
from engine.fanout import Fanout, item_keys
from engine.journal import Journal
from engine.jsondata import storable_text
from engine.lease import Lease
from engine.secrets import SecretRefs
from engine.status import InstanceStatus, StepStatus
from engine.step_state import StepState, instance_outcome, step_states
from engine.store import Store


@dataclass(order=True)
class _Timer:
    due: float
    index: int
    step: str = field(compare=False)
    attempt: int = field(compare=False)
    item: int | None = field(default=None, compare=False)


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
        self.concurrency = self.definition.concurrency
        self.states = step_states(loaded)
        self.scope: dict[str, Any] = dict(params=params, run=run, steps={}, secrets=SecretRefs())
        self._outcomes: queue.SimpleQueue[StepOutcome | None] = queue.SimpleQueue()
        """Outcomes from the dispatcher; None only wakes the loop (a cancellation)."""
        self._runnable: list[tuple[int, str]] = []
        self._retries: list[_Timer] = []
        self._deadlines: list[_Timer] = []
        self._in_flight: dict[str, StepTask] = {}
        """The attempts in flight of steps that are not mapped; a mapped step's are its fanout's."""
        self._fanouts: dict[str, Fanout] = {}
        """The mapped steps running; each holds one slot of `concurrency`, as a step does."""
        self.journal = Journal(instance_id, listener, lambda: self._outcomes.put(None))
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
                    self.journal.flush(writer)
                    for task in tasks:
                        self.dispatcher.submit(task, self._outcomes.put, self.journal.hear)
                    if not (self._in_flight or self._fanouts or self._retries or self._runnable):
                        break
                    self._wait()
                self._check_lease()
                if self.cancellation.reason is not None:
                    self.journal.take_heard()
                    self._end_in_flight(StepStatus.cancelled, self.cancellation.reason)
                    self.journal.flush(writer)
                    return Outcome(InstanceStatus.cancelled, self.cancellation.reason)
            except LeaseLost:
                for task in self._tasks():
                    self.dispatcher.cancel(task)
                raise
            except KeyboardInterrupt:  # no signal handler installed: stop as if cancelled
                self._end_in_flight(StepStatus.cancelled, "interrupted")
                self.journal.salvage(writer)
                return Outcome(InstanceStatus.cancelled, "interrupted")
            except BaseException as exc:
                self._end_in_flight(StepStatus.failed, f"engine error: {exc!r}")
                self.journal.salvage(writer)
                raise
        return instance_outcome(self.states.values())

    def _check_lease(self) -> None:
        if self.cancellation.lease_lost is not None:
            raise LeaseLost(self.cancellation.lease_lost)

    def _resume_history(self) -> list[str]:
        """Take the steps that already succeeded as ended; return the steps ready to decide.

        Attempt numbers continue after the last attempt of each step. A resumed instance runs
        again only what did not succeed: succeeded steps keep their results and feed the rest.
        """
        for step, prior in self.history.items():
            if (state := self.states.get(step)) is not None:
                state.attempt = prior.attempt
                if prior.status is StepStatus.succeeded:
                    self._end(state, StepStatus.succeeded, prior.result)
        return [s.id for s in self.states.values() if s.waiting == 0 and s.status is None]

    def _wait(self) -> None:
        """Block until an outcome arrives, a retry or deadline falls due, or log lines heard are
        due to be written; handle what did."""
        timers = [t.due for t in (self._retries[:1] + self._deadlines[:1])]
        if (heard := self.journal.heard_due) is not None:
            timers.append(heard)
        timeout = max(0.0, min(timers) - time.monotonic()) if timers else None
        try:
            self._handle(self._outcomes.get(timeout=timeout))
            while True:
                self._handle(self._outcomes.get_nowait())
        except queue.Empty:
            pass
        now = time.monotonic()
        if (heard := self.journal.heard_due) is not None and heard <= now:
            self.journal.take_heard()
        while self._retries and self._retries[0].due <= now:
            timer = heapq.heappop(self._retries)
            if timer.item is None:
                self._make_runnable(self.states[timer.step])
            elif (fanout := self._fanouts.get(timer.step)) is not None:
                fanout.retry_due(timer.item)
        while self._deadlines and self._deadlines[0].due <= now:
            timer = heapq.heappop(self._deadlines)
            task = self._running_task(timer.step, timer.item)
            if task is not None and task.attempt == timer.attempt:
                self.dispatcher.cancel(task)
                limit = self.states[timer.step].timeout
                error = f"timeout: the attempt ran longer than {limit:g}s"
                self._handle(StepOutcome(task, ok=False, error=error))

    # -- starting ---------------------------------------------------------------------------

    def _start_runnable(self) -> list[StepTask]:
        """Start what may start: ready steps while slots are free, and the items of mapped
        steps. Repeated while a mapped step that ended at once (every item resumed, say) has
        freed a slot for a ready step."""
        tasks: list[StepTask] = []
        while True:
            while self._runnable and self._slot_free():
                _, step = heapq.heappop(self._runnable)
                state = self.states[step]
                if state.map is not None:
                    self._open_fanout(state, state.map)
                    continue
                try:
                    inputs = state.render_inputs(self.scope)
                except Exception as exc:
                    self._settle(self._fail_before_start(state, f"inputs: {exc}"))
                    continue
                state.attempt += 1
                results = {
                    up.source: self.scope["steps"][up.source]["result"] for up in state.incoming
                }
                task = self._task(state, state.attempt, inputs, results)
                self._in_flight[step] = task
                tasks.append(self._started(state, task, time.monotonic() - state.ready_at))
            for fanout in list(self._fanouts.values()):
                tasks.extend(self._start_items(fanout))
            if not (self._runnable and self._slot_free()):
                return tasks

    def _slot_free(self) -> bool:
        return len(self._in_flight) + len(self._fanouts) < self.concurrency

    def _open_fanout(self, state: StepState, plan: MapPlan) -> None:
        """Evaluate a mapped step's items and their keys, all before any item runs."""
        try:
            items = plan.items.render(self.scope)
            keys = item_keys(items, plan.key, plan.spec.as_name, self.scope)
        except Exception as exc:
            self._settle(self._fail_before_start(state, f"map: {exc}"))
            return
        resumed = state.id in self.history
        state.attempt += 1
        self.journal.open(state.id, state.attempt, items=len(items))
        self._fanouts[state.id] = Fanout(
            state.id,
            state.attempt,
            items,
            keys,
            concurrency=plan.spec.concurrency or self.concurrency,
            fail_fast=plan.spec.fail_fast,
            prior=self.store.last_item_attempts(self.instance_id, state.id) if resumed else {},
        )

    def _start_items(self, fanout: Fanout) -> list[StepTask]:
        state = self.states[fanout.step]
        assert state.map is not None
        scope, name = dict(self.scope), state.map.spec.as_name
        tasks = []
        while (index := fanout.next_item()) is not None:
            item, key = fanout.items[index], fanout.keys[index]
            attempt = fanout.attempts[index] + 1
            scope[name] = item
            try:
                inputs = state.render_inputs(scope)
            except Exception as exc:
                fanout.attempts[index] = attempt
                error = storable_text(f"inputs: {exc}")
                self.journal.open(state.id, attempt, StepStatus.failed, error, item=key)
                fanout.fail(index, retry=False)
                continue
            task = self._task(state, attempt, inputs, {}, item=item, item_key=key, item_index=index)
            fanout.started(index, task)
            tasks.append(self._started(state, task))
        self._close_if_finished(fanout)
        return tasks

    def _task(
        self,
        state: StepState,
        attempt: int,
        inputs: dict[str, Any],
        results: dict[str, Any],
        **item: Any,
    ) -> StepTask:
        """An attempt's task; an item's gets `item`, `item_key` and `item_index`, and no
        upstream results (each of 100,000 items would carry the whole list it came from)."""
        return StepTask(
            instance_id=self.instance_id,
            step_id=state.id,
            attempt=attempt,
            runner=state.runner,
            inputs=inputs,
            params=self.params,
            results=results,
            run=self.run_info,
            timeout=state.timeout,
            queue=state.queue,
            **item,
        )

    def _started(self, state: StepState, task: StepTask, waited: float | None = None) -> StepTask:
        """Record an attempt about to be handed over: its row and event, its deadline."""
        self.journal.open(state.id, task.attempt, item=task.item_key, waited=waited)
        if state.timeout is not None:
            due = time.monotonic() + state.timeout
            timer = _Timer(due, state.index, state.id, task.attempt, task.item_index)
            heapq.heappush(self._deadlines, timer)
        return task

    def _fail_before_start(self, state: StepState, error: str) -> list[str]:
        """A step whose condition, inputs or items could not be evaluated fails without a runner
        call; returns the downstream steps that became ready."""
        state.attempt += 1
        self.journal.open(state.id, state.attempt, StepStatus.failed, storable_text(error))
        return self._end(state, StepStatus.failed, None)

    # -- ending -----------------------------------------------------------------------------

    def _handle(self, outcome: StepOutcome | None) -> None:
        if outcome is None:
            return  # a wake-up: the loop looks at the cancellation
        task, item = outcome.task, outcome.task.item_index
        self.journal.take_heard()  # an attempt's lines are written before, or with, its end
        if outcome.logs:
            self.journal.said(task, outcome.logs)
        current = self._running_task(task.step_id, item)
        if current is None or current.attempt != task.attempt:
            return  # a late outcome of an attempt already ended (timed out)
        fanout = None if item is None else self._fanouts[task.step_id]
        if fanout is None:
            del self._in_flight[task.step_id]
        state, key = self.states[task.step_id], task.item_key
        if outcome.ok:
            status, result = StepStatus.succeeded, outcome.result
            self.journal.close(state.id, task.attempt, status, result, item=key)
            if fanout is None:
                self._settle(self._end(state, status, result))
            else:
                fanout.succeed(task.item_index or 0, result)
                self._close_if_finished(fanout)
            return
        retry = task.attempt < state.retry.max_attempts and not (fanout and fanout.stopped)
        delay = state.retry.delay(task.attempt) if retry else None
        if delay is not None:
            due = time.monotonic() + delay
            heapq.heappush(self._retries, _Timer(due, state.index, state.id, task.attempt, item))
        self.journal.close(
            state.id, task.attempt, StepStatus.failed, None, outcome.error, item=key, retry_in=delay
        )
        if fanout is not None:
            fanout.fail(item or 0, retry=retry)
            self._close_if_finished(fanout)
        elif not retry:
            self._settle(self._end(state, StepStatus.failed, None))

    def _running_task(self, step: str, item: int | None) -> StepTask | None:
        if item is None:
            return self._in_flight.get(step)
        fanout = self._fanouts.get(step)
        return None if fanout is None else fanout.running.get(item)

    def _tasks(self) -> Iterator[StepTask]:
        """Every attempt in flight, of steps and of items."""
        yield from self._in_flight.values()
        for fanout in self._fanouts.values():
            yield from fanout.running.values()

    def _close_if_finished(self, fanout: Fanout) -> None:
        """End a mapped step once its items have: its own row gets the collected results."""
        if not fanout.finished:
            return
        state = self.states[fanout.step]
        status, result, error = fanout.outcome()
        self.journal.close(state.id, fanout.attempt, status, result, error)
        del self._fanouts[fanout.step]
        if fanout.awaiting_retry:  # failFast stopped it: its retries will not run
            self._retries = [t for t in self._retries if t.item is None or t.step != fanout.step]
            heapq.heapify(self._retries)
        self._settle(self._end(state, status, result))

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
                self._make_runnable(state)
                continue
            state.attempt += 1
            self.journal.open(state.id, state.attempt, StepStatus.skipped)
            work.extend(self._end(state, StepStatus.skipped, None))

    def _make_runnable(self, state: StepState) -> None:
        state.ready_at = time.monotonic()
        heapq.heappush(self._runnable, (state.index, state.id))

    def _end_in_flight(self, status: StepStatus, error: str) -> None:
        """Stop every running attempt (its runner is asked to stop) and record its end, and
        the end of every mapped step running."""
        for task in self._tasks():
            self.dispatcher.cancel(task)
            self.journal.close(task.step_id, task.attempt, status, None, error, item=task.item_key)
        for fanout in self._fanouts.values():
            self.journal.close(fanout.step, fanout.attempt, status, None, error)
        self._in_flight.clear()
        self._fanouts.clear()
