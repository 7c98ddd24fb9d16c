"""Batch definitions: the DSL models and the loader that validates them."""

from engine.definition.loader import LoadedDefinition, MapPlan, load_file, load_text
from engine.definition.models import Definition, Edge, Join, On, Param, Retry, Step

__all__ = [
    "Definition",
    "Edge",
    "Join",
    "LoadedDefinition",
    "MapPlan",
    "On",
    "Param",
    "Retry",
    "Step",
    "load_file",
    "load_text",
]
