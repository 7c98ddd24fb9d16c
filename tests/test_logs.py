"""Step logs, in process: every line a runner says during an attempt (`ctx.logger`, print, stderr)
is stored under that attempt, whatever runs it (runner threads, the event loop, worker processes,
Celery workers), up to the attempt's limit; and it reads back a page at a time, while the
instance runs, with no line skipped and none repeated.

On both databases. The `engine logs` command and the HTTP route are in test_logs_cli.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import log_runners
import pytest
from conftest import Workers, broker_url
from executing import WAIT, run
from log_runners import name, said, say, spilled

from engine.dispatch.base import Dispatcher
from engine.dispatch.direct import DirectDispatcher
from engine.dispatch.process import ProcessDispatcher
from engine.registry import JobRegistry
from engine.store import Store
from engine.store.logs import MAX_PAGE, LogLineView, LogPage

pytestmark = pytest.mark.timeout(120)

Said = list[tuple[str, str, str]]
"""(level, stream, message) rows of one attempt, in order."""


def stored(store: Store, instance_id: int, **filters: Any) -> list[LogLineView]:
    """Every line of an ended instance (with `filters`), oldest first, in one page."""
    page = store.logs.page(instance_id, limit=MAX_PAGE, **filters)
    assert page.next is None, "an ended instance has nothing more to read"
    return page.lines


def by_attempt(lines: list[LogLineView]) -> dict[str, Said]:
    """The lines of each attempt, named as `log_runners.name` names it: `step[item]#attempt`."""
    out: dict[str, Said] = {}
    for line in lines:
        step = line.step if line.item is None else f"{line.step}[{line.item}]"
        out.setdefault(f"{step}#{line.attempt}", []).append((line.level, line.stream, line.message))
    return out


# -- attempts at once -----------------------------------------------------------------------

WIDTH = 8
ROUNDS = 40
CROWD = "name: crowd\nconcurrency: 8\nsteps:\n" + "".join(
    f"  - {{id: {kind}{i}, runner: {runner}, nextSteps: []}}\n"
    for kind, runner in (("s", "busy"), ("a", "busy_async"))
    for i in range(WIDTH // 2)
)
"""Four sync and four async steps, all at once."""


def test_attempts_running_at_once_each_keep_their_own_lines_in_order(store, registry):
    """Eight attempts, four in runner threads and four on the event loop, each say line i of
    each kind before any says line i + 1 (they meet at a barrier between lines): every line is
    stored under the attempt that said it, in the order it said them. A thread the runner starts
    in its own context (asyncio.to_thread, contextvars.copy_context) speaks for the attempt; a
    bare thread speaks for nobody, not for whichever attempt runs beside it."""
    barrier = threading.Barrier(WIDTH, timeout=WAIT)
    middle = ROUNDS // 2

    @registry.handler("busy")
    def busy(inputs, ctx):
        for i in range(ROUNDS):
            barrier.wait()
            if i == middle:
                stray = threading.Thread(target=print, args=(f"stray of {name(ctx)}",))
                stray.start()
                stray.join()
            say(ctx, i)
        own = contextvars.copy_context()
        thread = threading.Thread(target=own.run, args=(print, f"{name(ctx)} from its thread"))
        thread.start()
        thread.join()
        return name(ctx)

    @registry.handler("busy_async")
    async def busy_async(inputs, ctx):
        loop = asyncio.get_running_loop()
        for i in range(ROUNDS):
            await asyncio.to_thread(barrier.wait)
            if i == middle:
                await loop.run_in_executor(None, print, f"stray of {name(ctx)}")
            say(ctx, i)
        await asyncio.to_thread(print, f"{name(ctx)} from its thread")
        return name(ctx)

    view = run(store, registry, CROWD)
    assert view.status == "succeeded", [s.error for s in view.steps]
    expected = {
        f"{kind}{i}#1": [
            *said(f"{kind}{i}#1", ROUNDS),
            ("info", "stdout", f"{kind}{i}#1 from its thread"),
        ]
        for kind in "sa"
        for i in range(WIDTH // 2)
    }
    assert by_attempt(stored(store, view.id)) == expected


# -- retries and items, on every dispatcher --------------------------------------------------


@pytest.fixture(scope="module")
def log_queue(session_queue: str) -> str:
    """The queue of this module's Celery worker, which no other module's workers consume."""
    return f"{session_queue}-logs"


@pytest.fixture(scope="module")
def redis_worker(log_queue: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    workers = Workers(broker_url("redis"), tmp_path_factory.mktemp("log-workers"))
    try:
        workers.start("logs-1", log_queue)
        workers.wait_ready()
        yield workers
    finally:
        workers.stop()


@pytest.fixture(params=["direct", "process", "celery-redis"])
def dispatcher(
    request: pytest.FixtureRequest, registry: JobRegistry, log_queue: str
) -> tuple[Dispatcher, str]:
    """A dispatcher of the log runners, and the `defaults:` line that sends steps to it."""
    log_runners.register(registry)
    if request.param == "direct":
        return DirectDispatcher(registry), "defaults:"
    if request.param == "process":
        return ProcessDispatcher(registry), "defaults:"
    from engine.dispatch.celery import CeleryDispatcher

    workers: Workers = request.getfixturevalue("redis_worker")
    return CeleryDispatcher(registry, broker=workers.broker), f"defaults:\n  queue: {log_queue}"


RETRIED = """
name: retried
defaults:
  retry: {maxAttempts: 2, delaySeconds: 0}
steps:
  - {id: once, runner: talk, inputs: {lines: 3, succeed_on: 2, level: error}, nextSteps: []}
  - id: fan
    runner: talk_async
    map: {items: [{key: eu, tries: 1}, {key: us, tries: 2}, {key: asia, tries: 1}], as: row,
          key: "{{ row.key }}", concurrency: 3}
    inputs: {lines: 2, succeed_on: "{{ row.tries }}"}
    nextSteps: []
"""


def test_each_attempt_and_each_item_keeps_its_own_lines_whatever_runs_it(
    store, registry, dispatcher
):
    """A step that fails once says its lines twice: once under each attempt. An item's lines
    carry its key; filters by step, item and attempt read exactly the lines they name. Lines
    come from runner threads and the event loop (direct), over a worker process's pipe
    (process), and with the outcome (Celery, Redis)."""
    made, defaults = dispatcher
    view = run(store, registry, RETRIED.replace("defaults:", defaults), dispatcher=made)
    assert view.status == "succeeded", [s.error for s in view.steps]
    once = [f"once#{a}" for a in (1, 2)]
    items = ["fan[eu]#1", "fan[us]#1", "fan[us]#2", "fan[asia]#1"]
    expected = {who: said(who, 3, "error") for who in once} | {who: said(who, 2) for who in items}
    lines = stored(store, view.id)
    assert by_attempt(lines) == expected
    assert {line.item for line in lines if line.step == "once"} == {None}

    def messages(**filters: Any) -> list[str]:
        return [line.message for line in stored(store, view.id, **filters)]

    us = [message for _, _, message in expected["fan[us]#1"] + expected["fan[us]#2"]]
    assert messages(item="us") == us
    assert messages(step="fan", item="us", attempt=2) == [m for _, _, m in expected["fan[us]#2"]]
    assert messages(step="once", attempt=1) == [m for _, _, m in expected["once#1"]]
    assert messages(step="fan", attempt=2) == [m for _, _, m in expected["fan[us]#2"]]
    assert messages(item="nowhere") == []


# -- the limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [DirectDispatcher, ProcessDispatcher], ids=["direct", "process"])
def test_an_attempt_keeps_its_log_up_to_the_limit_then_says_once_how_much_it_dropped(
    sqlite_store, registry, monkeypatch, make
):
    """ENGINE_LOG_LIMIT=200 keeps ten lines of 20 bytes (12 characters each: the limit is in
    bytes), then one line counting the 15 dropped; the next attempt has a limit of its own."""
    monkeypatch.setenv("ENGINE_LOG_LIMIT", "200")
    log_runners.register(registry)
    text = """
    name: spilt
    steps:
      - {id: s, runner: spill, inputs: {lines: 25, succeed_on: 2}, retry: {maxAttempts: 2}}
    """
    view = run(sqlite_store, registry, text, dispatcher=make(registry))
    assert [s.status for s in view.steps] == ["failed", "succeeded"]
    dropped = (
        "warning",
        "log",
        "… 15 more lines (300 bytes) dropped: over the log limit of this attempt "
        "(ENGINE_LOG_LIMIT)",
    )
    kept = [("info", "stdout", spilled(i)) for i in range(10)]
    assert by_attempt(stored(sqlite_store, view.id)) == {
        "s#1": [*kept, dropped],
        "s#2": [*kept, dropped],
    }


def test_a_line_that_never_ends_is_not_kept_in_memory_past_the_limit(
    sqlite_store, registry, monkeypatch
):
    """10 MB written without a newline (a progress bar redrawn with \\r, a binary dump), with a
    limit of 1,000 bytes: the attempt holds about its limit, not the whole line, while it runs."""
    monkeypatch.setenv("ENGINE_LOG_LIMIT", "1000")

    @registry.handler("unended")
    def unended(inputs, ctx):
        tracemalloc.reset_peak()
        chunk = "x" * 50_000
        for _ in range(200):
            sys.stdout.write(chunk)
        return tracemalloc.get_traced_memory()[1]

    tracemalloc.start()
    try:
        view = run(sqlite_store, registry, "name: unended\nsteps:\n  - {id: u, runner: unended}")
    finally:
        tracemalloc.stop()
    assert view.status == "succeeded", [s.error for s in view.steps]
    assert view.steps[0].result < 2_000_000, "bytes held at the peak"


# -- paging while lines are written ----------------------------------------------------------

CHATTER = 1500
PAGE = 50

Page = tuple[list[Any], int | None]
"""The lines of a page, and its `next`."""


def page_through(fetch: Callable[[int | None], Page], going_on: Callable[[], None]) -> list[Any]:
    """Every line `fetch(after)` gives, page after page, until `next` is null; once two pages'
    worth are read, `going_on()` (which lets the runners say the rest)."""
    read: list[Any] = []
    after: int | None = None
    deadline = time.monotonic() + 60
    while True:
        lines, after = fetch(after)
        read += lines
        if after is None:
            return read
        if len(read) >= 2 * PAGE:
            going_on()
        if not lines:
            assert time.monotonic() < deadline, "no more lines came, and the instance runs on"
            time.sleep(0.01)  # nothing new yet: ask again


def _page(page: LogPage) -> Page:
    return page.lines, page.next


def test_a_page_of_long_lines_ends_after_the_line_that_passes_its_characters(store, registry):
    """Lines of 100,000 characters, read with a budget of 250,000: three a page (the third goes
    over), then the rest; `next` is null only after the last, though the instance has ended."""

    @registry.handler("long")
    def long(inputs, ctx):
        for i in range(7):
            print(str(i) * 100_000)

    view = run(store, registry, "name: long\nsteps:\n  - {id: l, runner: long}")
    pages, after = [], None
    while True:
        page = store.logs.page(view.id, after=after, max_chars=250_000)
        pages.append([line.message[0] for line in page.lines])
        if page.next is None:
            break
        after = page.next
    assert pages == [["0", "1", "2"], ["3", "4", "5"], ["6"]]


@pytest.mark.parametrize("step", [None, "b"])
def test_paging_while_the_instance_runs_neither_skips_nor_repeats_a_line(store, registry, step):
    """Two steps print 2 x 1,500 lines each; a reader pages 50 lines at a time from the moment
    the first lines are written (the runners go on once it has read two pages) until `next` is
    null: what it read is every stored line, in order, each once."""
    instance_ids: queue.SimpleQueue[int] = queue.SimpleQueue()
    paged = threading.Event()

    @registry.handler("chatter")
    def chatter(inputs, ctx):
        instance_ids.put(ctx.instance_id)
        for i in range(CHATTER):
            print(f"{ctx.step_id} {i}")
        assert paged.wait(WAIT), "the reader read nothing while the steps ran"
        for i in range(CHATTER, 2 * CHATTER):
            print(f"{ctx.step_id} {i}")

    text = """
    name: chatty
    concurrency: 2
    steps:
      - {id: a, runner: chatter, nextSteps: []}
      - {id: b, runner: chatter, nextSteps: []}
    """
    views: list[Any] = []
    running = threading.Thread(target=lambda: views.append(run(store, registry, text)))
    running.start()
    instance_id = instance_ids.get(timeout=WAIT)
    read = page_through(
        lambda after: _page(store.logs.page(instance_id, step=step, after=after, limit=PAGE)),
        paged.set,
    )
    running.join(WAIT)
    assert views, "the run did not end"
    assert views[0].status == "succeeded", [s.error for s in views[0].steps]
    assert read == stored(store, instance_id, step=step)
    steps = [step] if step else ["a", "b"]
    assert {s: [line.message for line in read if line.step == s] for s in steps} == {
        s: [f"{s} {i}" for i in range(2 * CHATTER)] for s in steps
    }
    assert len(read) == 2 * CHATTER * len(steps)
