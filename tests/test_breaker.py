"""The circuit breaker on a fake clock: opens after a run of failures, fails fast, one probe decides."""

from __future__ import annotations

import pytest

from launch_gateway.server.errors import UpstreamUnavailable
from launch_gateway.server.upstream.breaker import CircuitBreaker, State
from tests.fake_clock import FakeClock


def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failures=3, cooldown=5.0)
    for _ in range(2):
        breaker.before_call()
        breaker.failed()
    breaker.before_call()
    breaker.succeeded()  # a success resets the run
    for _ in range(3):
        breaker.before_call()
        breaker.failed()
    assert breaker.state is State.OPEN
    assert breaker.not_ready_reason() == "upstream: circuit open"
    clock.advance(2.0)
    with pytest.raises(
        UpstreamUnavailable, match=r"circuit open after 3 consecutive failures; retry in 3\.0 s"
    ) as caught:
        breaker.before_call()
    assert caught.value.retry_after == pytest.approx(3.0)


def test_one_probe_after_the_cooldown_decides() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failures=1, cooldown=5.0)
    breaker.failed()
    clock.advance(5.0)
    breaker.before_call()  # the probe goes through...
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call()  # ...and only the probe
    breaker.failed()
    assert breaker.state is State.OPEN  # a failed probe opens it again for a full cooldown
    clock.advance(5.0)
    breaker.before_call()
    breaker.succeeded()
    assert breaker.state is State.CLOSED
    breaker.before_call()


def test_an_abandoned_probe_lets_another_one_go() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failures=1, cooldown=1.0)
    breaker.failed()
    clock.advance(1.0)
    breaker.before_call()
    breaker.abandoned()  # the probe call was cancelled without a verdict
    breaker.before_call()


def test_zero_failures_disables_the_breaker() -> None:
    breaker = CircuitBreaker(FakeClock(), failures=0, cooldown=5.0)
    for _ in range(100):
        breaker.before_call()
        breaker.failed()
    assert breaker.state is State.CLOSED
