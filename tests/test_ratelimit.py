"""Token-bucket arithmetic (`take`) and the in-memory limiter, on a fake clock."""

from __future__ import annotations

import pytest

from launch_gateway.server.limits.buckets import Decision, MemoryRateLimiter, Rate, RateLimiter, take
from tests.fake_clock import FakeClock

RATE = Rate(per_second=2.0, burst=4)  # a token every 0.5 s, four held


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"per_second": 0, "burst": 1}, "per_second", id="zero-rate"),
        pytest.param({"per_second": -1.0, "burst": 1}, "per_second", id="negative-rate"),
        pytest.param({"per_second": float("inf"), "burst": 1}, "per_second", id="infinite-rate"),
        pytest.param({"per_second": 1.0, "burst": 0}, "burst", id="zero-burst"),
    ],
)
def test_rate_rejects_bad_fields_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        Rate(**kwargs)  # type: ignore[arg-type]


def test_fresh_bucket_starts_full() -> None:
    tokens, updated, d = take(4.0, 10.0, RATE, now=10.0)
    assert (tokens, updated) == (3.0, 10.0)
    assert d == Decision(allowed=True, limit=4, remaining=3, reset_after=0.5, retry_after=0.0)


def test_empty_bucket_refuses_with_exact_retry_and_reset() -> None:
    tokens, updated, d = take(0.0, 10.0, RATE, now=10.0)
    assert (tokens, updated) == (0.0, 10.0)
    assert d == Decision(allowed=False, limit=4, remaining=0, reset_after=2.0, retry_after=0.5)


def test_partial_refill_shortens_retry_after() -> None:
    tokens, _, d = take(0.0, 10.0, RATE, now=10.2)  # 0.4 token refilled
    assert not d.allowed
    assert tokens == pytest.approx(0.4)
    assert d.retry_after == pytest.approx(0.3)
    assert d.reset_after == pytest.approx(1.8)


def test_refill_then_spend() -> None:
    tokens, updated, d = take(0.0, 10.0, RATE, now=11.0)  # two tokens back
    assert (tokens, updated) == (1.0, 11.0)
    assert d == Decision(allowed=True, limit=4, remaining=1, reset_after=1.5, retry_after=0.0)


def test_refill_is_capped_at_burst() -> None:
    tokens, _, d = take(1.0, 10.0, RATE, now=1000.0)
    assert tokens == 3.0
    assert d.remaining == 3


def test_cost_above_one_spends_that_many_or_none() -> None:
    tokens, _, d = take(4.0, 10.0, RATE, now=10.0, cost=3)
    assert (tokens, d.allowed, d.remaining) == (1.0, True, 1)
    tokens, _, d = take(tokens, 10.0, RATE, now=10.0, cost=3)
    assert (tokens, d.allowed) == (1.0, False)  # a refusal spends nothing
    assert d.retry_after == 1.0  # two more tokens at two per second


@pytest.mark.parametrize("cost", [0, -1, 5], ids=["zero", "negative", "above-burst"])
def test_cost_outside_one_to_burst_is_a_bug(cost: int) -> None:
    with pytest.raises(ValueError, match=r"^cost:"):
        take(4.0, 10.0, RATE, now=10.0, cost=cost)


def test_clock_going_backwards_mints_no_tokens() -> None:
    tokens, updated, d = take(0.0, 10.0, RATE, now=5.0)
    assert (tokens, updated, d.allowed) == (0.0, 10.0, False)  # the later time is kept
    tokens, updated, d = take(tokens, updated, RATE, now=10.5)  # only 0.5 s since 10.0 counts
    assert (tokens, updated, d.allowed) == (0.0, 10.5, True)


def test_float_error_does_not_refuse_a_whole_token() -> None:
    rate = Rate(per_second=0.7, burst=1)
    tokens, updated = 0.0, 0.0
    for i in range(1, 8):  # seven refills of 0.1 token each sum to 0.9999999999999998
        tokens, updated, d = take(tokens, updated, rate, now=i * (1 / 0.7) / 7)
    assert d.allowed
    assert d.remaining == 0


def test_lowered_burst_caps_stored_tokens() -> None:
    tokens, _, d = take(10.0, 0.0, RATE, now=0.0)
    assert (tokens, d.remaining) == (3.0, 3)


async def test_memory_limiter_refuses_burst_overflow_with_retry_after() -> None:
    limiter: RateLimiter = MemoryRateLimiter(FakeClock())
    decisions = [await limiter.check("tenant-a", RATE) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 4 + [False] * 2
    assert [d.remaining for d in decisions] == [3, 2, 1, 0, 0, 0]
    assert decisions[-1].retry_after == 0.5
    assert decisions[-1].reset_after == 2.0


async def test_memory_limiter_recovers_as_the_clock_advances() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    for _ in range(4):
        assert (await limiter.check("k", RATE)).allowed
    assert not (await limiter.check("k", RATE)).allowed
    clock.advance(0.49)
    assert not (await limiter.check("k", RATE)).allowed
    clock.advance(0.01)
    assert (await limiter.check("k", RATE)).allowed
    clock.advance(10)
    assert (await limiter.check("k", RATE)).remaining == 3


async def test_memory_limiter_keys_are_independent() -> None:
    limiter = MemoryRateLimiter(FakeClock())
    for _ in range(4):
        await limiter.check("a", RATE)
    assert not (await limiter.check("a", RATE)).allowed
    assert (await limiter.check("b", RATE)).remaining == 3


async def test_memory_limiter_sweep_drops_buckets_that_refilled() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock, sweep_interval=10)
    for i in range(50):
        await limiter.check(f"idle-{i}", RATE)
    for _ in range(4):
        await limiter.check("busy", Rate(per_second=0.01, burst=4))  # 400 s to refill
    assert len(limiter) == 51
    clock.advance(10)
    await limiter.check("busy", Rate(per_second=0.01, burst=4))
    assert len(limiter) == 1  # the idle buckets were full again; the busy one is not
    assert not (await limiter.check("busy", Rate(per_second=0.01, burst=4))).allowed


async def test_memory_limiter_caps_keys_evicting_least_recently_used() -> None:
    limiter = MemoryRateLimiter(FakeClock(), max_keys=3)
    for key in ("a", "b", "c"):
        for _ in range(4):
            await limiter.check(key, RATE)
    await limiter.check("a", RATE)  # "b" is now the least recently used
    await limiter.check("d", RATE)
    assert len(limiter) == 3
    assert not (await limiter.check("a", RATE)).allowed  # kept, still drained
    assert not (await limiter.check("c", RATE)).allowed
    assert (await limiter.check("b", RATE)).remaining == 3  # evicted: a fresh, full bucket
    assert len(limiter) == 3


async def test_memory_limiter_close_forgets_buckets() -> None:
    limiter = MemoryRateLimiter(FakeClock())
    await limiter.check("a", RATE)
    await limiter.close()
    assert len(limiter) == 0
