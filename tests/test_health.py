"""What `/healthz` concludes of a scheduler: dead, stuck, or healthy with failing definitions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from engine.health import STUCK_SECONDS, SchedulerHealth

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
STUCK = timedelta(seconds=STUCK_SECONDS)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_scheduler_is_stuck_once_no_round_completed_for_the_threshold():
    clock = Clock()
    health = SchedulerHealth(clock)
    health.thread = threading.current_thread()
    assert health.healthy, "before its first round, counted from the start"
    clock.now += STUCK + timedelta(seconds=1)
    assert not health.healthy and health.alive
    health.round_done(["b", "a"])
    assert health.healthy, "failing definitions do not make the scheduler unhealthy"
    assert health.failing == ("a", "b") and health.last_round == clock.now
    clock.now += STUCK
    assert health.healthy
    clock.now += timedelta(seconds=1)
    assert not health.healthy


def test_a_scheduler_whose_thread_ended_or_never_started_is_dead():
    health = SchedulerHealth()
    assert not health.alive and not health.healthy
    health.thread = threading.Thread(target=lambda: None)
    health.thread.start()
    health.thread.join()
    health.round_done([])
    assert not health.alive and not health.healthy
