"""Persistence: tables, the Store, and the views it returns."""

from engine.store.attempts import AttemptEnd, AttemptLine, AttemptStart
from engine.store.store import Store
from engine.store.views import InstanceView, StepAttemptView

__all__ = ["AttemptEnd", "AttemptLine", "AttemptStart", "InstanceView", "StepAttemptView", "Store"]
