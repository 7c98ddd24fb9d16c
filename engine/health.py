"""How a scheduler thread fares, for `/healthz`: a thread that died, or that stopped completing
rounds, stops every cron of its process while the API still answers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from engine.store.types import utcnow

STUCK_SECONDS = 60.0
"""A scheduler starts a round at least every `IDLE_SECONDS` (5 s), or after a back-off of at
most 30 s; one that completed none for this long hangs."""


class SchedulerHealth:
    """Written by the scheduler after each round, read by the server's threads. Every write
    replaces a whole attribute, so a reader needs no lock.

    Args:
        clock: the current time; the real one, even when the scheduler's is fake.
    """

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self.started = clock()
        self.thread: threading.Thread | None = None
        """The thread the scheduler runs in, once started."""
        self.last_round: datetime | None = None
        """When the scheduler last tried every definition, whatever the outcome."""
        self.failing: tuple[str, ...] = ()
        """The definitions whose last round failed, by name."""

    def round_done(self, failing: Iterable[str]) -> None:
        self.failing = tuple(sorted(failing))
        self.last_round = self.clock()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def healthy(self) -> bool:
        """Alive, with a round completed within `STUCK_SECONDS` (of the start, before the
        first). A failing definition leaves the scheduler healthy: the others still fire."""
        since = self.last_round or self.started
        return self.alive and (self.clock() - since).total_seconds() <= STUCK_SECONDS
