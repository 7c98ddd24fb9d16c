"""A dispatcher that gives each attempt of one run its secret params (`engine.secret_params`)."""

from __future__ import annotations

import dataclasses

from engine.dispatch.base import Dispatcher, Done, LogSink, StepTask
from engine.secret_params import SecretParams


def with_secret_params(dispatcher: Dispatcher, secret: SecretParams | None) -> Dispatcher:
    """`dispatcher`, its tasks given `secret` (itself when None)."""
    return dispatcher if secret is None else _Giving(dispatcher, secret)


class _Giving(Dispatcher):
    """Gives each attempt of one run its secret params on their way to the dispatcher: the
    executor builds its tasks without knowing the values. Closing is the inner one's owner's."""

    def __init__(self, inner: Dispatcher, secret: SecretParams) -> None:
        self.inner, self.secret = inner, secret

    def submit(self, task: StepTask, done: Done, sink: LogSink | None = None) -> None:
        self.inner.submit(dataclasses.replace(task, secret_params=self.secret), done, sink)

    def cancel(self, task: StepTask) -> None:
        self.inner.cancel(task)
