"""Persistence: tables, the Store, and the views it returns."""

from engine.store.store import DEFAULT_URL, AttemptEnd, AttemptStart, Store
from engine.store.views import InstanceView, StepAttemptView

__all__ = ["DEFAULT_URL", "AttemptEnd", "AttemptStart", "InstanceView", "StepAttemptView", "Store"]
