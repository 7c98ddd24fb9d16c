"""Leases on running instances: how a crashed or stalled process is told from a slow one, and
how a process that lost its instance is kept from writing to it.

The process running an instance holds its lease: its name in `lease_owner` and an expiry that a
heartbeat thread renews every third of the lease (at least every second, when it also looks for
a cancel request). The heartbeat has its own thread and connection, so nothing the executor does
(a slow template, a progress display blocked on a full pipe) lets the lease lapse. A process
killed outright (kill -9, a lost machine) or stalled (SIGSTOP, a VM pause) stops renewing; once
the expiry is past, every other process sees the instance as abandoned and may claim it.

Fencing: every write of a running instance is conditional on `lease_owner` still naming this
process (the attempt writer's rounds, the final status, the heartbeat itself). A process that
wakes from a stall to find its instance claimed by another writes nothing more and stops.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from engine.config import LEASE_ENV, number
from engine.errors import LeaseLost
from engine.periodic import Periodic
from engine.store import Store
from engine.store.types import utcnow

log = logging.getLogger(__name__)


def lease_seconds() -> float:
    return number(LEASE_ENV)


def lease_expiry() -> datetime:
    """When a lease taken or renewed now expires."""
    return utcnow() + timedelta(seconds=lease_seconds())


class Lease:
    """The lease of one instance held by this process."""

    def __init__(self, store: Store, instance_id: int) -> None:
        self.store = store
        self.instance_id = instance_id
        self.seconds = lease_seconds()
        self.interval = min(self.seconds / 3, 1.0)
        """How often `beat` renews the lease and looks for a cancel request."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._due = time.monotonic() + self.interval

    def expiry(self) -> datetime:
        return utcnow() + timedelta(seconds=self.seconds)

    def beat(self) -> bool:
        """Renew the lease when it is due; True once a cancel has been requested.

        Raises LeaseLost when another process holds the instance now.
        """
        if time.monotonic() < self._due:
            return False
        self._due = time.monotonic() + self.interval
        return self.store.leases.renew(self.instance_id, self.owner, self.expiry())


class Heartbeat(Periodic):
    """Keeps a lease renewed on a thread of its own while an instance runs.

    `on_cancel` is called once a cancel is requested, `on_lost` (with the reason) once the lease
    is found lost; both from the heartbeat's thread. A renewal that fails (the database is
    unreachable) is logged and tried again: the fenced writes decide in the end.
    """

    def __init__(
        self,
        lease: Lease,
        on_cancel: Callable[[], None],
        on_lost: Callable[[str], None],
    ) -> None:
        super().__init__(f"engine-lease-{lease.instance_id}", lease.interval)
        self.lease = lease
        self._on_cancel = on_cancel
        self._on_lost = on_lost
        self._cancel_seen = False

    def tick(self) -> bool:
        lease = self.lease
        try:
            cancel = lease.store.leases.renew(lease.instance_id, lease.owner, lease.expiry())
        except LeaseLost as lost:
            self._on_lost(str(lost))
            return False
        if cancel and not self._cancel_seen:
            self._cancel_seen = True
            self._on_cancel()
        return True
