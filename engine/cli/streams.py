"""Standard output and error that never drop what they were given.

A blocking write to a pipe that a stop signal interrupts (SIGSTOP, or Ctrl-Z on
`engine runs show 1 --json | jq`) returns a partial count on Linux once it has moved some bytes,
and CPython's buffered writer then reports the part as written and drops the rest, without an
error: the reader gets truncated JSON. Every write here goes on until all of it is out.
"""

from __future__ import annotations

import io
import os
from typing import TextIO


class _WholeWrites(io.RawIOBase):
    """A file descriptor whose writes are whole (closing it leaves the descriptor open)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        return done


def whole_writes(stream: TextIO) -> TextIO:
    """`stream`, with the same encoding and buffering (stderr's writes go out at once), over
    writes that are never partial; `stream` itself when it has no file descriptor (a test's
    capture). `stream` must stay referenced (as `sys.__stdout__` is): it owns the descriptor."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    stream.flush()
    through = bool(getattr(stream, "write_through", False))
    return text_writer(fd, stream.encoding, stream.errors, bool(stream.line_buffering), through)


def text_writer(
    fd: int,
    encoding: str = "utf-8",
    errors: str | None = None,
    line_buffering: bool = False,
    write_through: bool = False,
) -> TextIO:
    """Text written to `fd` whole: through a buffer, or at each write with `write_through`."""
    raw = _WholeWrites(fd)
    buffer = raw if write_through else io.BufferedWriter(raw)  # type: ignore[type-var]
    return io.TextIOWrapper(  # type: ignore[type-var]
        buffer,
        encoding=encoding,
        errors=errors,
        line_buffering=line_buffering,
        write_through=write_through,
    )
