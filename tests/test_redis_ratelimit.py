"""RedisRateLimiter against a real redis-server on a unix socket: same arithmetic, shared buckets,
and the outage policy (fail open / closed, logged once per outage)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from launch_gateway.server.limits.buckets import Decision, Rate, take
from launch_gateway.server.limits.redis_buckets import RedisRateLimiter
from launch_gateway.server.settings import LimitsSettings
from tests.fake_clock import FakeClock
from tests.redis_server import RedisServer

RATE = Rate(per_second=2.0, burst=4)
LOGGER = "launch_gateway.server.limits.redis_buckets"


PREFIXED = LimitsSettings(redis_prefix="t:")


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    try:
        yield c
    finally:
        await c.aclose()


# (seconds since start, cost): bursts, refusals, partial refills, a clock step backwards
SCRIPT = [(0.0, 1), (0.0, 2), (0.0, 1), (0.0, 1), (0.1, 1), (0.3, 1), (0.3, 2), (1.7, 3), (1.2, 1)]
SCRIPT += [(1.2, 1), (5.0, 4), (5.0, 1), (5.05, 1), (4.0, 1), (5.55, 1), (100.0, 2)]


async def test_redis_and_pure_arithmetic_agree_on_a_sequence(client: aioredis.Redis) -> None:
    clock = FakeClock()
    limiter = RedisRateLimiter(client, PREFIXED, clock)
    start = clock.t
    tokens, updated = float(RATE.burst), clock.wall()
    outcomes = set()
    for offset, cost in SCRIPT:
        clock.t = start + offset
        tokens, updated, expected = take(tokens, updated, RATE, clock.wall(), cost)
        got = await limiter.check("agree", RATE, cost)
        assert got == expected, f"at +{offset}s cost {cost}"
        stored = await client.hgetall("t:agree")
        assert (float(stored[b"tokens"]), float(stored[b"updated"])) == (tokens, updated)
        outcomes.add(got.allowed)
    assert outcomes == {True, False}


async def test_idle_keys_expire(client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(client, PREFIXED, FakeClock())
    await limiter.check("ttl", Rate(per_second=0.5, burst=10))
    ttl_ms = await client.pttl("t:ttl")
    assert 20_000 < ttl_ms <= 21_000  # empty to full is 20 s, plus a second of slack


async def test_two_replicas_sharing_a_key_never_exceed_burst(redis_server: RedisServer) -> None:
    clock = FakeClock()
    limiters = [RedisRateLimiter.from_url(redis_server.url, LimitsSettings(), clock) for _ in range(2)]
    try:
        rate = Rate(per_second=1.0, burst=5)
        decisions = await asyncio.gather(*(limiters[i % 2].check("shared", rate) for i in range(40)))
        assert sum(d.allowed for d in decisions) == 5
        clock.advance(2.0)  # two tokens back, whichever replica asks
        decisions = await asyncio.gather(*(limiters[i % 2].check("shared", rate) for i in range(10)))
        assert sum(d.allowed for d in decisions) == 2
    finally:
        for limiter in limiters:
            await limiter.close()


def outage_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


@pytest.mark.parametrize(
    ("fail_open", "expected"),
    [
        pytest.param(True, Decision(True, 4, 4, 0.0, 0.0, degraded=True), id="fail-open-allows"),
        pytest.param(False, Decision(False, 4, 0, 1.0, 1.0, degraded=True), id="fail-closed-refuses"),
    ],
)
async def test_outage_uses_the_policy_and_logs_once_each_way(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, fail_open: bool, expected: Decision
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    limiter = RedisRateLimiter.from_url(
        redis_server.url, LimitsSettings(fail_open=fail_open), FakeClock(), probe_interval=0
    )
    try:
        assert (await limiter.check("k", RATE)).remaining == 3
        redis_server.kill()
        for _ in range(20):  # every call goes to Redis (probe_interval=0) and fails
            assert await limiter.check("k", RATE) == expected
        assert not limiter.healthy
        assert limiter.outage_decisions == {"allowed" if fail_open else "refused": 20}
        [warning] = outage_records(caplog, logging.WARNING)
        assert ("failing open" if fail_open else "failing closed") in warning.getMessage()
        assert outage_records(caplog, logging.INFO) == []

        redis_server.start()  # a fresh, empty server on the same socket
        for _ in range(3):
            assert (await limiter.check("k", RATE)).allowed
        assert limiter.healthy
        [info] = outage_records(caplog, logging.INFO)
        assert "answers again" in info.getMessage()
        assert "20 decisions" in info.getMessage()
        assert len(outage_records(caplog, logging.WARNING)) == 1
    finally:
        await limiter.close()


async def test_outage_probes_redis_at_most_every_probe_interval(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    limiter = RedisRateLimiter.from_url(redis_server.url, LimitsSettings(), clock, probe_interval=5.0)
    try:
        redis_server.kill()
        assert (await limiter.check("k", RATE)).allowed  # fails: the outage starts at t0
        redis_server.start()
        clock.advance(4.9)
        assert (await limiter.check("k", RATE)).allowed
        assert not limiter.healthy  # within the probe interval Redis is not asked
        assert outage_records(caplog, logging.INFO) == []
        clock.advance(0.1)
        assert (await limiter.check("k", RATE)).remaining == 3  # asked again: a real bucket
        assert limiter.healthy
        assert len(outage_records(caplog, logging.INFO)) == 1
        assert limiter.outage_decisions == {"allowed": 2}
    finally:
        await limiter.close()


async def test_password_never_reaches_logs_or_repr(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    missing = tmp_path_factory.mktemp("nored") / "absent.sock"
    limiter = RedisRateLimiter.from_url(f"unix://:hunter2@{missing}", LimitsSettings(fail_open=False), FakeClock())
    try:
        decision = await limiter.check("k", RATE)
        assert not decision.allowed
        assert decision.retry_after == 1.0
        [warning] = outage_records(caplog, logging.WARNING)
        assert str(missing) in warning.getMessage()
        assert "hunter2" not in caplog.text
        assert "hunter2" not in repr(limiter)
    finally:
        await limiter.close()


async def test_bad_cost_is_a_bug_not_an_outage(client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(client, LimitsSettings(), FakeClock())
    with pytest.raises(ValueError, match=r"^cost:"):
        await limiter.check("k", RATE, cost=5)
    assert limiter.outage_decisions == {}
