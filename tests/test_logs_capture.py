"""What one attempt's log keeps of what its runner writes, whatever the pieces it writes in: the
lines, in order, up to ENGINE_LOG_LIMIT bytes, and one line that counts exactly what was dropped."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.dispatch.base import LogLine
from engine.dispatch.capture import AttemptLog, Capture

_DROPPED = re.compile(r"… ([\d,]+) more lines \(([\d,]+) bytes\) dropped")

writes = st.lists(
    st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(alphabet="ab\né", max_size=12)),
    max_size=40,
)


def _lines(text: str) -> list[str]:
    """The lines of `text` as the log sees them: each newline ends one, and what follows the last
    newline is one more, unless empty."""
    *ended, rest = text.split("\n")
    return [*ended, rest] if rest else ended


def _size(text: str) -> int:
    return len(text.encode())


@settings(max_examples=300, deadline=None)
@given(writes=writes, limit=st.integers(0, 40))
def test_kept_and_dropped_add_up_to_what_was_written(writes, limit):
    """Per stream: the kept lines are some of the written ones, in order, within the limit
    together; kept and dropped lines and bytes add up to exactly what was written."""
    delivered: list[LogLine] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENGINE_LOG_LIMIT", str(limit))
        log = AttemptLog(delivered.extend)
        for stream, text in writes:
            log.write(stream, text)
        log.close()
    counted = [line for line in delivered if line.stream == "log"]
    kept = [line for line in delivered if line.stream != "log"]
    assert sum(_size(line.message) for line in kept) <= limit
    written_lines = written_bytes = 0
    for stream in ("stdout", "stderr"):
        lines = _lines("".join(text for s, text in writes if s == stream))
        remaining = iter(lines)
        ours = [line.message for line in kept if line.stream == stream]
        assert all(line in remaining for line in ours), "kept lines are written ones, in order"
        written_lines += len(lines)
        written_bytes += sum(map(_size, lines))
    dropped_lines = dropped_bytes = 0
    if counted:
        (line,) = counted
        found = _DROPPED.match(line.message)
        assert found is not None, line.message
        dropped_lines, dropped_bytes = (int(g.replace(",", "")) for g in found.groups())
        assert dropped_lines > 0
    assert len(kept) + dropped_lines == written_lines
    assert sum(_size(line.message) for line in kept) + dropped_bytes == written_bytes


def test_a_silent_attempt_reads_no_limit_and_says_nothing(monkeypatch):
    """An attempt that writes nothing never reads ENGINE_LOG_LIMIT (its log is made at its first
    line: a bad value is refused before any command runs) and delivers no line."""
    monkeypatch.setenv("ENGINE_LOG_LIMIT", "not a number")
    delivered: list[LogLine] = []
    with Capture(delivered.extend):
        pass
    assert delivered == []
