"""What of a stored step error the HTTP API shows: the message, never the traceback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.api.tracebacks import without_traceback
from engine.dispatch.base import StepOutcome, StepTask
from engine.jsondata import storable_text

TASK = StepTask(1, "step", 1, "runner", {}, {}, {}, {})


def stored(exc: BaseException) -> str:
    """`exc` raised, caught and stored as a runner's failure is."""
    try:
        raise exc
    except BaseException as caught:
        error = StepOutcome.failure(TASK, caught).error
    assert error is not None and __file__ in error
    return error


def test_the_message_is_kept_and_the_traceback_dropped() -> None:
    assert without_traceback(stored(ValueError("no row\n\nfor day 3"))) == (
        "ValueError: no row\n\nfor day 3"
    )


def test_a_chained_error_loses_every_traceback() -> None:
    try:
        try:
            raise KeyError("day")
        except KeyError as cause:
            raise RuntimeError("lookup failed") from cause
    except RuntimeError as exc:
        error = stored(exc)
    assert error.count("Traceback (most recent call last):") == 2
    assert without_traceback(error) == "RuntimeError: lookup failed"


def test_an_exception_group_loses_its_traceback() -> None:
    error = stored(ExceptionGroup("two failed", [ValueError("a"), TypeError("b")]))
    assert without_traceback(error) == "ExceptionGroup: two failed (2 sub-exceptions)"


def test_an_error_cut_for_storage_keeps_its_head_only() -> None:
    error = stored(ValueError("x" * 100_000))
    assert "characters cut" in error and __file__ in error.rsplit("characters cut", 1)[1]
    shown = without_traceback(error)
    assert shown.startswith("ValueError: xxx") and __file__ not in shown
    assert len(shown) < 40_000


@pytest.mark.parametrize(
    "error",
    [
        "timeout: the attempt ran longer than 2s",
        "worker process exited with code 0",
        "the result is not JSON-serialisable: Object of type set is not JSON serializable",
    ],
)
def test_an_error_without_a_traceback_is_kept_whole(error: str) -> None:
    assert without_traceback(error) == error


@given(st.text())
def test_what_is_shown_is_never_more_than_the_message(message: str) -> None:
    shown = without_traceback(stored(RuntimeError(message)))
    head = storable_text(f"RuntimeError: {message}")
    assert head.startswith(shown)
    if "\n\n" not in message and "characters cut" not in message:
        assert shown == head
