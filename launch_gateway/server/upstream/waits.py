"""WaitAsyncTask's engine: one upstream poll loop per task, shared by everyone waiting on it.

The Launch client sleeps a flat 2 s between polls, so a result waits a second on average. Here the
loop polls with exponential backoff from `poll.initial` (50 ms by default) to `poll.max`, and any
number of waiters on one task cost one loop: upstream polls per task do not grow with waiters.
The loop stops when the task is terminal, when a poll fails for good, or when its last waiter leaves.
When Launch's callback says a task ended (`upstream.task_callbacks`), `wake` ends the loop's pause
at once: the next poll is taken now, so the waiters have the answer milliseconds after the task's end.

A poll is a GET, so a poll that fails for a moment (`retries.is_transient`: throttled, the upstream's own
500, unreachable, too slow) is simply taken again, after the backoff or the upstream's Retry-After,
whichever is longer: a wait outlasts it, and ends in an error only when its time runs out before
the upstream gave any answer. Any other failure ends the loop, and every waiter gets it.

A wait's own time is the shorter of its timeout and the caller's deadline; at the drain (`ending`, one
watcher for every waiter) it is over at once. Either way it answers the last status seen, and if no poll
has ended yet it waits for the first one, but never past the caller's deadline: then it ends with
UpstreamTimeout, naming the deadline, rather than with grpc-core's bare DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import GatewayError, UpstreamTimeout, bounded_retry_delay
from launch_gateway.server.settings import PollSettings
from launch_gateway.server.upstream.retries import is_transient
from launch_gateway.server.upstream.translate import TERMINAL_STATUSES
from launch_gateway.v1 import endpoint_service_pb2 as pb

Poll = Callable[[], Awaitable[pb.EndpointResponse]]

RETRY_AFTER_CAP = 60.0  # seconds: a longer Retry-After is taken as this, so a task that ends is still seen


@dataclass
class _Loop:
    """One task's poll loop and what its waiters share."""

    done: asyncio.Future[pb.EndpointResponse]  # the terminal response, or the error that ended the loop
    looked: asyncio.Event = field(default_factory=asyncio.Event)  # set once a first poll has ended
    latest: pb.EndpointResponse | None = None  # the last answer
    error: GatewayError | None = None  # the last transient failure
    task: asyncio.Task[None] | None = None
    task_key: tuple[str, str] = ("", "")  # (tenant, upstream task id): what a callback names
    woken: bool = False  # a callback said the task ended: poll now, not after the pause
    nap: asyncio.Future[None] | None = None  # the pause in progress, ended early by a wake
    # Each waiter's one wake-up (set when `done` is, at its own time, or at the drain); how many wait is its size.
    answers: set[asyncio.Future[None]] = field(default_factory=set)


def _wake(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def _wake_all(futures: set[asyncio.Future[None]]) -> None:
    for future in futures:
        _wake(future)


def _answer_waiters(futures: set[asyncio.Future[None]], _done: asyncio.Future[Any]) -> None:
    """`loop.done`'s callback: its task ended (or its loop did), so every one of its waiters returns."""
    _wake_all(futures)


class TaskWaits:
    """Waits for async tasks, sharing one poll loop per key among all of its waiters."""

    def __init__(
        self,
        clock: Clock,
        poll: PollSettings,
        on_poll: Callable[[], None] | None = None,
        ending: asyncio.Event | None = None,
    ) -> None:
        self._clock = clock
        self._poll = poll
        self._loops: dict[str, _Loop] = {}
        self._by_task: dict[tuple[str, str], set[str]] = {}  # (tenant, upstream id) -> the keys of its loops
        self._on_poll = on_poll
        self._ending = ending  # set at the drain: every wait answers its last status then
        self._ended: asyncio.Task[Any] | None = None  # one watcher of `ending` for all waiters

    def _watch_ending(self) -> None:
        if self._ending is not None and self._ended is None:
            self._ended = asyncio.ensure_future(self._ending.wait())
            self._ended.add_done_callback(lambda _: self._answer_all())

    def _answer_all(self) -> None:
        """The drain: every wait answers now (a loop that has ended has answered its waiters already)."""
        for loop in self._loops.values():
            _wake_all(loop.answers)

    @property
    def active_loops(self) -> int:
        return len(self._loops)

    async def wait(
        self,
        key: str,
        poll: Poll,
        wait_seconds: float,
        *,
        deadline: float | None = None,
        task: tuple[str, str] = ("", ""),
    ) -> pb.EndpointResponse:
        """The task's terminal response, or the last one seen when `wait_seconds` pass or the drain begins.

        `key` identifies the task and who may see it; `poll` takes one look (it is used only if
        this call starts the loop). At least one look is awaited even when `wait_seconds` is tiny, so
        the answer is always a status the upstream gave, or, when no poll got one, the last failure;
        but no longer than `deadline` (the seconds the caller's deadline leaves): UpstreamTimeout then.
        `task` is (tenant, upstream task id), what `wake` is told when Launch's callback says the task ended.
        """
        started = self._clock.now()
        loop = self._loops.get(key)
        if loop is None or loop.done.done():
            loop = _Loop(done=asyncio.get_running_loop().create_future(), task_key=task)
            loop.done.add_done_callback(functools.partial(_answer_waiters, loop.answers))
            self._loops[key] = loop
            self._by_task.setdefault(task, set()).add(key)
            loop.task = asyncio.create_task(self._run(key, loop, poll))
        aio = asyncio.get_running_loop()
        # This waiter's one wake-up, whichever comes first: the task's end, its time, the drain.
        woken: asyncio.Future[None] = aio.create_future()
        loop.answers.add(woken)
        timer = aio.call_later(max(wait_seconds, 0.0), _wake, woken)
        self._watch_ending()
        try:
            if not loop.done.done() and not (self._ending is not None and self._ending.is_set()):
                await woken
            if loop.done.done():
                return loop.done.result()
            if not loop.looked.is_set():
                # No poll has ended yet: wait for the first, within the poll's timeout and the caller's deadline.
                looked: asyncio.Future[bool] = asyncio.ensure_future(loop.looked.wait())
                left = None if deadline is None else max(deadline - (self._clock.now() - started), 0.0)
                try:
                    await asyncio.wait((looked, loop.done), timeout=left, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    looked.cancel()
                if loop.done.done():
                    return loop.done.result()
                if not loop.looked.is_set():
                    raise UpstreamTimeout(f"no poll of the task answered within the call's deadline ({deadline:.3g} s)")
            if loop.latest is not None:
                return loop.latest
            assert loop.error is not None
            raise loop.error  # the time ran out and every poll failed for a moment
        finally:
            timer.cancel()
            loop.answers.discard(woken)
            if not loop.answers and not loop.done.done():
                self._end(key, loop)

    def wake(self, tenant: str, upstream_id: str) -> int:
        """Launch says the task ended (its callback): every loop of it polls now. The answer still comes
        from that poll, never from the callback. The number of loops woken."""
        keys = self._by_task.get((tenant, upstream_id), ())
        for key in keys:
            loop = self._loops[key]
            loop.woken = True  # a poll in flight may have started before the end: one more follows at once
            if loop.nap is not None and not loop.nap.done():
                loop.nap.set_result(None)
        return len(keys)

    def _forget(self, key: str, loop: _Loop) -> None:
        if self._loops.get(key) is loop:
            del self._loops[key]
            keys = self._by_task.get(loop.task_key)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_task[loop.task_key]

    def _end(self, key: str, loop: _Loop) -> None:
        if loop.task is not None:
            loop.task.cancel()
        if not loop.done.done():
            loop.done.cancel()
        self._forget(key, loop)

    async def _pause(self, loop: _Loop, seconds: float) -> None:
        """Sleep between polls (on the Clock), ended early by `wake`."""
        if loop.woken:
            loop.woken = False
            return
        loop.nap = asyncio.get_running_loop().create_future()
        sleep = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait((sleep, loop.nap), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            loop.nap = None
        loop.woken = False

    async def _run(self, key: str, loop: _Loop, poll: Poll) -> None:
        delay = self._poll.initial
        try:
            while True:
                if self._on_poll:
                    self._on_poll()
                pause = delay
                try:
                    response = await poll()
                except GatewayError as exc:
                    if not is_transient(exc):
                        raise
                    loop.error = exc
                    pause = max(delay, bounded_retry_delay(exc.retry_after, RETRY_AFTER_CAP) or 0.0)
                else:
                    loop.latest = response
                    if response.status in TERMINAL_STATUSES:
                        loop.done.set_result(response)
                        return
                finally:
                    loop.looked.set()
                await self._pause(loop, pause)
                delay = min(delay * self._poll.multiplier, self._poll.max)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # every waiter gets the error that ended the loop
            if not loop.done.done():
                loop.done.set_exception(exc)
                loop.done.exception()  # mark retrieved: a loop whose waiters left must not warn
        finally:
            self._forget(key, loop)

    async def close(self) -> None:
        """Stop every loop (on shutdown)."""
        for key, loop in list(self._loops.items()):
            self._end(key, loop)
        if self._ended is not None:
            self._ended.cancel()
