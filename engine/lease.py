"""Leases on running instances: how a crashed process is told from a slow one.

The process running an instance holds its lease: its name in `lease_owner` and an expiry it
renews every third of the lease (at least every second, when it also looks for a cancel
request). A process killed outright (kill -9, a lost machine) stops
renewing; once the expiry is past, every other process sees the instance as abandoned. Telling
takes at most one lease (`ENGINE_LEASE_SECONDS`, default 30 s).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from engine.config import DEFAULT_LEASE_SECONDS, LEASE_ENV
from engine.store import Store
from engine.store.types import utcnow


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_SECONDS)


class Lease:
    """The lease of one instance held by this process."""

    def __init__(
        self, store: Store, instance_id: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.seconds = lease_seconds()
        self.interval = min(self.seconds / 3, 1.0)
        """How often `beat` renews the lease and looks for a cancel request."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._due = clock() + self.interval

    def expiry(self) -> datetime:
        return utcnow() + timedelta(seconds=self.seconds)

    def beat(self) -> bool:
        """Renew the lease when it is due; True once a cancel has been requested."""
        if self._clock() < self._due:
            return False
        self._due = self._clock() + self.interval
        return self.store.renew_lease(self.instance_id, self.expiry())
