"""TaskWaits: one poll loop per task however many wait, backoff from the settings, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from launch_gateway.server.errors import (
    GatewayError,
    Internal,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from launch_gateway.server.settings import PollSettings
from launch_gateway.server.upstream.retries import is_transient
from launch_gateway.server.upstream.waits import RETRY_AFTER_CAP, TaskWaits
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


async def test_a_poll_that_fails_for_good_reaches_every_waiter() -> None:
    async def failing() -> pb.EndpointResponse:
        raise Unauthenticated("upstream GET /v1/async-tasks/t answered HTTP 401", http_status=401)

    waits = TaskWaits(FakeClock(), POLL)
    results = await asyncio.gather(*(waits.wait("k", failing, 5) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) for r in results)
    with pytest.raises(Unauthenticated):
        await waits.wait("k", failing, 5)  # a new wait starts a new loop


class FailingFirst(ScriptedTask):
    """Raises `failures` one by one on the first polls, then answers from the script."""

    def __init__(self, failures: list[GatewayError], *statuses: int) -> None:
        super().__init__(*statuses)
        self.failures = failures

    async def poll(self) -> pb.EndpointResponse:
        if self.failures:
            self.polls += 1
            raise self.failures.pop(0)
        return await super().poll()


def throttled(retry_after: float) -> ResourceExhausted:
    return ResourceExhausted("HTTP 429", retry_after=retry_after, http_status=429)


async def test_a_wait_polls_again_after_429_and_500_honouring_retry_after() -> None:
    clock = FakeClock()
    failures: list[GatewayError] = [throttled(2.0), Internal("HTTP 500", http_status=500), UpstreamUnavailable("reset")]
    task = FailingFirst(failures, pb.TASK_STATUS_SUCCESS)
    response = await TaskWaits(clock, POLL).wait("k", task.poll, 60)
    assert response.status == pb.TASK_STATUS_SUCCESS
    assert clock.delays == [2.0, 0.1, 0.15]  # the Retry-After, then the backoff as usual


async def test_a_huge_retry_after_is_capped() -> None:
    clock = FakeClock()
    task = FailingFirst([throttled(1e30)], pb.TASK_STATUS_SUCCESS)
    await TaskWaits(clock, POLL).wait("k", task.poll, 60)
    assert clock.delays == [RETRY_AFTER_CAP]


async def test_a_wait_whose_polls_all_fail_for_a_moment_ends_with_the_last_failure() -> None:
    task = FailingFirst([throttled(1.0), Internal("HTTP 500", http_status=500)], pb.TASK_STATUS_PENDING)
    task.release.clear()  # after the failures, the next poll hangs: the time runs out meanwhile
    waits = TaskWaits(FakeClock(), POLL)
    with pytest.raises(Internal):
        await waits.wait("k", task.poll, 0.05)
    assert task.polls == 2


async def test_a_wait_that_saw_a_status_answers_it_when_later_polls_fail() -> None:
    polls = 0

    async def flaky() -> pb.EndpointResponse:
        nonlocal polls
        polls += 1
        if polls == 1:
            return pb.EndpointResponse(status=pb.TASK_STATUS_STARTED, task_id="t")
        if polls <= 3:
            raise throttled(0.0)
        await asyncio.Event().wait()  # then no answer until the time runs out
        raise AssertionError("unreachable")

    response = await TaskWaits(FakeClock(), POLL).wait("k", flaky, 0.05)
    assert response.status == pb.TASK_STATUS_STARTED  # the last status seen, not the 429s after it
    assert polls == 4


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        pytest.param(throttled(1.0), True, id="429"),
        pytest.param(Internal("HTTP 500", http_status=500), True, id="500"),
        pytest.param(UpstreamUnavailable("HTTP 503", http_status=503), True, id="503"),
        pytest.param(UpstreamTimeout("HTTP 504", http_status=504), True, id="504"),
        pytest.param(UpstreamUnavailable("connection reset"), True, id="connection-broke"),
        pytest.param(UpstreamTimeout("no answer within 30 s"), True, id="poll-timed-out"),
        pytest.param(Unauthenticated("HTTP 401", http_status=401), False, id="401"),
        pytest.param(NotFound("HTTP 404", http_status=404), False, id="404"),
        pytest.param(Internal("HTTP 501", http_status=501), False, id="501"),
        pytest.param(UpstreamProtocolError("invalid JSON"), False, id="unreadable-answer"),
        pytest.param(UpstreamTooLarge("past max_body_bytes"), False, id="too-large"),
        pytest.param(ValueError("a bug"), False, id="not-ours"),
    ],
)
def test_which_poll_failures_a_wait_outlasts(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient
