"""What the UI's routes work with, beside the API's `ServedState`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import Request

from engine.definition import load_text
from engine.errors import DefinitionError
from engine.served import ServedState
from engine.store.browse import Browse
from engine.ui.layout import Topology
from engine.ui.session import Sessions

CACHED_VERSIONS = 16
"""Definition versions whose topology is kept: loading a 10,000-step version again costs
more than a page."""


@dataclass
class UIState:
    served: ServedState
    sessions: Sessions
    browse: Browse
    _topologies: OrderedDict[str, Topology | None] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def topology(self, name: str, version: str, instance_id: int) -> Topology | None:
        """The graph of the definition version an instance ran: the served one when it is that
        version, else its stored source loaded once. None when that source no longer loads."""
        with self._lock:
            if version in self._topologies:
                self._topologies.move_to_end(version)
                return self._topologies[version]
        served = self.served.definitions.get(name)
        if served is not None and served.version == version:
            found: Topology | None = Topology.of(served.graph)
        else:
            source = self.served.service.store.stored_instance(instance_id).source
            try:
                found = Topology.of(load_text(source, f"{name}@{version[:12]}").graph)
            except DefinitionError:
                found = None
        with self._lock:
            self._topologies[version] = found
            while len(self._topologies) > CACHED_VERSIONS:
                self._topologies.popitem(last=False)
        return found


def ui_state(request: Request) -> UIState:
    found: UIState = request.app.state.ui
    return found
