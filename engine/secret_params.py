"""Secret params (`params: {token: {type: string, secret: true}}`): given when a run starts,
masked as `***` the way `{{ secrets.NAME }}` is, and never stored in plain text.

What every view reads (the instance's `params` column, the dry-run plan) holds `***` for them.
The values stay in the memory of the process that started the run and travel with each attempt
(`StepTask.secret_params`): in memory to a thread, over a local pipe to a worker process, and
only sealed (Fernet, `ENGINE_PARAMS_KEY`) across a Celery broker. In the executor's scope a
secret param is a placeholder, so rendered inputs carry placeholders, revealed where the attempt
runs (`engine.secrets.reveal`). With a key, the database keeps them sealed too
(`batch_instance.sealed_params`), for a resume or a recovery; without one, nothing is kept and
such an instance cannot be resumed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from engine.config import PARAMS_KEY_ENV, params_keys
from engine.errors import ResumeRefused
from engine.secrets import MASK, MissingSecret, param_placeholder

if TYPE_CHECKING:
    from engine.definition.models import Param


class SecretParamsLost(ResumeRefused):
    """An instance's secret params cannot be had here: never kept, or sealed with another key."""

    def __init__(self, message: str, *, kept: bool = True) -> None:
        super().__init__(message)
        self.kept = kept
        """False: they were never stored, so no process can run the instance again."""


class MissingSecretParam(MissingSecret):
    """An attempt needs a secret param that did not reach the process running it."""


class SecretParams:
    """The values of one run's secret params, by name; `why` says why any name lacks one.

    Its repr shows `***`, so that a task printed or logged shows no value. Pickled only over a
    process dispatcher's local pipe; a Celery task carries `to_wire()` instead.
    """

    __slots__ = ("_sealed", "names", "values", "why")

    def __init__(
        self, names: Iterable[str], values: Mapping[str, str], why: str | None = None
    ) -> None:
        self.names = tuple(names)
        self.values = dict(values)
        self.why = why
        self._sealed: str | None = None

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={MASK if name in self.values else '<missing>'}" for name in self.names
        )
        return f"SecretParams({shown})"

    def __getstate__(self) -> tuple[Any, ...]:
        return self.names, self.values, self.why

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.names, self.values, self.why = state
        self._sealed = None

    def missing(self, name: str) -> MissingSecretParam:
        """The error of an attempt that needs `name`, which did not reach it."""
        return MissingSecretParam(
            f"secret param {name!r} did not reach the process running the step: "
            + (self.why or "its value is unknown here")
        )

    def sealed(self) -> str | None:
        """The values as a Fernet token under ENGINE_PARAMS_KEY (None without a key); made
        once: every attempt of the run carries the same token."""
        if self._sealed is None and self.values:
            fernet = _fernet()
            if fernet is not None:
                self._sealed = fernet.encrypt(json.dumps(self.values).encode()).decode()
        return self._sealed

    def to_wire(self) -> dict[str, Any]:
        """What a Celery task carries: the names, and the values sealed (or not at all)."""
        return {"names": list(self.names), "sealed": self.sealed()}

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> SecretParams:
        """On a worker: the values unsealed with this process's key; without them, `why`."""
        names, token = wire["names"], wire.get("sealed")
        if token is None:
            why = (
                f"the engine that sent it has no {PARAMS_KEY_ENV}, and a Celery broker carries "
                f"secret params only sealed with it; set one {PARAMS_KEY_ENV} for the engine and "
                "its workers"
            )
            return cls(names, {}, why)
        try:
            return cls(names, unseal(token))
        except SecretParamsLost as exc:
            return cls(names, {}, f"this worker {exc}")


def _fernet() -> Any:
    """A MultiFernet of ENGINE_PARAMS_KEY's keys, or None when it is unset."""
    keys = params_keys()
    if not keys:
        return None
    from cryptography.fernet import Fernet, MultiFernet

    return MultiFernet([Fernet(key) for key in keys])


def unseal(token: str) -> dict[str, str]:
    """The values in a token made by `SecretParams.sealed`; SecretParamsLost (saying "has no
    key" or "has another key", for the caller to name who) when this process cannot read it."""
    from cryptography.fernet import InvalidToken

    fernet = _fernet()
    if fernet is None:
        raise SecretParamsLost(
            f"has no {PARAMS_KEY_ENV} to unseal them: set it to the key that sealed them"
        )
    try:
        values: dict[str, str] = json.loads(fernet.decrypt(token.encode()))
    except (InvalidToken, ValueError):
        raise SecretParamsLost(
            f"has an {PARAMS_KEY_ENV} that is not the key which sealed them (while rotating, "
            "list the new key first and the old one after it, comma-separated)"
        ) from None
    return values


def split(
    declared: Mapping[str, Param], resolved: dict[str, Any]
) -> tuple[dict[str, Any], SecretParams | None]:
    """A run's params as every view shows them (`***` for each secret one given), and the
    secret values; None when the definition declares none or none was given."""
    names = [n for n, p in declared.items() if p.secret and isinstance(resolved.get(n), str)]
    if not names:
        return resolved, None
    shown = {name: MASK if name in names else value for name, value in resolved.items()}
    return shown, SecretParams(names, {name: resolved[name] for name in names})


def stored(
    instance_id: int, declared: Mapping[str, Param], shown: dict[str, Any], token: str | None
) -> SecretParams | None:
    """The secret params of a stored instance, for running it again here; SecretParamsLost
    naming the first param this process cannot have."""
    names = [n for n, p in declared.items() if p.secret and shown.get(n) == MASK]
    if not names:
        return None
    if token is None:
        raise SecretParamsLost(
            f"instance {instance_id} cannot run again: its secret param {names[0]!r} was not "
            f"kept, as {PARAMS_KEY_ENV} was not set when it started ({PARAMS_KEY_ENV} keeps "
            "secret params, sealed, for resume and recovery); start a new run instead",
            kept=False,
        )
    try:
        values = unseal(token)
    except SecretParamsLost as exc:
        raise SecretParamsLost(
            f"instance {instance_id} cannot run again here: its secret param {names[0]!r} is "
            f"sealed, and this process {exc}"
        ) from None
    return SecretParams(names, {name: values[name] for name in names if name in values})


def unkept_note(secret: SecretParams | None) -> str | None:
    """What to tell whoever starts a run whose secret params are not kept (no key), or None."""
    if secret is None or not secret.values or secret.sealed() is not None:
        return None
    return (
        f"note: {PARAMS_KEY_ENV} is not set, so the secret param {secret.names[0]!r} is not "
        "kept: this run cannot be resumed"
    )


def in_scope(shown: dict[str, Any], secret: SecretParams | None) -> dict[str, Any]:
    """The params the executor's templates see and its tasks carry: placeholders for the
    secret ones (a condition never sees a value; `prepare` reveals them for the runner)."""
    if secret is None:
        return shown
    return {**shown, **{name: param_placeholder(name) for name in secret.names}}


class WithheldParams(dict[str, Any]):
    """`ctx.params` of an attempt that some secret param did not reach: reading one of those
    raises, saying why, instead of handing the runner a placeholder or a mask."""

    def __init__(self, values: dict[str, Any], secret: SecretParams) -> None:
        super().__init__(values)
        self._secret = secret

    def __missing__(self, name: str) -> Any:
        if name in self._secret.names:
            raise self._secret.missing(name)
        raise KeyError(name)


def revealed_params(params: dict[str, Any], secret: SecretParams | None) -> dict[str, Any]:
    """`ctx.params`: an attempt's own copy of its task's params, each secret one's placeholder
    replaced by its value (one that did not reach this process is left out: see
    WithheldParams)."""
    if secret is None:
        return params
    withheld = False
    for name in secret.names:
        if params.get(name) != param_placeholder(name):
            continue
        if name in secret.values:
            params[name] = secret.values[name]
        else:
            del params[name]
            withheld = True
    return WithheldParams(params, secret) if withheld else params
