"""Choosing a dispatcher: by short name or dotted path, never a silent fallback."""

from __future__ import annotations

import pytest

from engine.dispatch import resolve_dispatcher
from engine.dispatch.direct import DirectDispatcher
from engine.errors import DispatchError


def test_direct_is_the_default(registry, monkeypatch):
    monkeypatch.delenv("ENGINE_DISPATCHER", raising=False)
    dispatcher = resolve_dispatcher(None, registry)
    assert isinstance(dispatcher, DirectDispatcher) and dispatcher.registry is registry


def test_the_environment_chooses(registry, monkeypatch):
    monkeypatch.setenv("ENGINE_DISPATCHER", "engine.dispatch.direct:DirectDispatcher")
    assert isinstance(resolve_dispatcher(None, registry), DirectDispatcher)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "unknown dispatcher 'nope'"),
        ("no.such.module:Thing", "cannot be loaded"),
        ("engine.dispatch.direct:Missing", "cannot be loaded"),
        ("engine.registry:JobRegistry", "not a Dispatcher subclass"),
    ],
)
def test_an_unknown_or_wrong_dispatcher_is_refused(registry, name, message):
    with pytest.raises(DispatchError, match=message):
        resolve_dispatcher(name, registry)
