"""A cron definition with a mapped step, fired by the scheduler under a fake clock into a real
background runner (as `engine serve` and `engine schedule` launch ticks): each tick's instance
runs its own items."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from test_scheduler import FIVE, T0, Clock, claims, scheduler

from engine.background import BackgroundRunner
from engine.dispatch.direct import DirectDispatcher
from engine.service import BatchService

EVERY5 = """
name: every5
cron: "*/5 * * * *"
steps:
  - {id: regions, runner: regions}
  - id: fan
    runner: stamp
    map: {items: "{{ steps.regions.result }}", as: region, key: "{{ region }}"}
    inputs: {at: "{{ run.scheduled_for }}"}
"""


@pytest.fixture
def runner(store, registry) -> Iterator[BackgroundRunner]:
    registry.add("regions", lambda inputs, ctx: ["north", "south", "east"])
    registry.add("stamp", lambda inputs, ctx: {"key": ctx.item_key, "at": inputs["at"]})
    dispatcher = DirectDispatcher(registry)
    background = BackgroundRunner(BatchService(store, dispatcher), max_instances=2)
    yield background
    background.stop(5)
    dispatcher.close()


def test_each_tick_of_a_cron_runs_the_items_of_its_mapped_step(runner, registry):
    service = runner.service
    clock = Clock(T0 + timedelta(seconds=20))
    cron = scheduler(service, registry, EVERY5, clock, launch=runner.launch)
    cron.poll()
    assert runner.drain(20)
    clock.now = T0 + FIVE + timedelta(seconds=1)
    cron.poll()
    assert runner.drain(20)

    assert claims(service) == [(T0, "succeeded"), (T0 + FIVE, "succeeded")]
    for tick in (T0, T0 + FIVE):
        claim = service.tick("every5", tick)
        assert claim is not None and claim.instance_id is not None
        view = service.store.get_instance(claim.instance_id)
        at = tick.isoformat()
        fan = [(s.item, s.attempt, s.status, s.result) for s in view.steps or [] if s.step == "fan"]
        assert fan == [
            (None, 1, "succeeded", [{"key": k, "at": at} for k in ("north", "south", "east")]),
            ("north", 1, "succeeded", {"key": "north", "at": at}),
            ("south", 1, "succeeded", {"key": "south", "at": at}),
            ("east", 1, "succeeded", {"key": "east", "at": at}),
        ]
