"""TaskWaits: one poll loop per task however many wait, backoff from the settings, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from launch_gateway.server.errors import UpstreamUnavailable
from launch_gateway.server.settings import PollSettings
from launch_gateway.server.upstream.waits import TaskWaits
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.fake_clock import FakeClock


class ScriptedTask:
    """Answers polls from a script of statuses (the last repeats), once `release` is set."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.polls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def poll(self) -> pb.EndpointResponse:
        await self.release.wait()
        status = self.statuses[min(self.polls, len(self.statuses) - 1)]
        self.polls += 1
        return pb.EndpointResponse(status=status, task_id="t")


POLL = PollSettings(initial=0.05, multiplier=2.0, max=0.15)


async def test_many_waiters_share_one_poll_loop() -> None:
    task = ScriptedTask(pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED, pb.TASK_STATUS_SUCCESS)
    task.release.clear()
    waits = TaskWaits(FakeClock(), POLL)
    waiters = [asyncio.create_task(waits.wait("k", task.poll, 60)) for _ in range(100)]
    await asyncio.sleep(0)  # every waiter runs up to its wait, then the first poll is let through
    task.release.set()
    results = await asyncio.gather(*waiters)
    assert {r.status for r in results} == {pb.TASK_STATUS_SUCCESS}
    assert task.polls == 3
    assert waits.active_loops == 0


async def test_backoff_grows_to_the_cap() -> None:
    clock = FakeClock()
    task = ScriptedTask(*([pb.TASK_STATUS_PENDING] * 5), pb.TASK_STATUS_SUCCESS)
    response = await TaskWaits(clock, POLL).wait("k", task.poll, 60)
    assert response.status == pb.TASK_STATUS_SUCCESS
    assert clock.delays == [0.05, 0.1, 0.15, 0.15, 0.15]


async def test_timeout_returns_the_last_status_seen() -> None:
    task = ScriptedTask(pb.TASK_STATUS_STARTED)
    waits = TaskWaits(FakeClock(), POLL)
    response = await waits.wait("k", task.poll, 0.01)
    assert response.status == pb.TASK_STATUS_STARTED
    await asyncio.sleep(0)
    assert waits.active_loops == 0  # the last waiter left: the loop stopped


async def test_zero_timeout_still_takes_one_look() -> None:
    task = ScriptedTask(pb.TASK_STATUS_PENDING)
    response = await TaskWaits(FakeClock(), POLL).wait("k", task.poll, 0)
    assert response.status == pb.TASK_STATUS_PENDING
    assert task.polls >= 1


async def test_a_failed_poll_reaches_every_waiter() -> None:
    async def failing() -> pb.EndpointResponse:
        raise UpstreamUnavailable("down")

    waits = TaskWaits(FakeClock(), POLL)
    results = await asyncio.gather(*(waits.wait("k", failing, 5) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, UpstreamUnavailable) for r in results)
    with pytest.raises(UpstreamUnavailable):
        await waits.wait("k", failing, 5)  # a new wait starts a new loop
