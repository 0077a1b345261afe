"""ConcurrencyLimiter: per-(tenant, kind) caps, refusal at the cap, idempotent release."""

from __future__ import annotations

import pytest

from launch_gateway.server.limits.concurrency import ConcurrencyLimiter, Lease


def test_acquire_up_to_the_cap_then_refuse_at_once() -> None:
    limiter = ConcurrencyLimiter()
    leases = [limiter.acquire("acme", "stream", 2) for _ in range(2)]
    assert all(isinstance(lease, Lease) for lease in leases)
    assert limiter.acquire("acme", "stream", 2) is None
    assert limiter.in_flight("acme", "stream") == 2


def test_release_frees_a_slot() -> None:
    limiter = ConcurrencyLimiter()
    lease = limiter.acquire("acme", "unary", 1)
    assert lease is not None
    assert limiter.acquire("acme", "unary", 1) is None
    lease.release()
    assert limiter.in_flight("acme", "unary") == 0
    assert limiter.acquire("acme", "unary", 1) is not None


def test_release_is_idempotent() -> None:
    limiter = ConcurrencyLimiter()
    first = limiter.acquire("acme", "wait", 3)
    second = limiter.acquire("acme", "wait", 3)
    assert first is not None
    assert second is not None
    first.release()
    first.release()
    with first:
        pass  # leaving the block releases again: still nothing
    assert first.released
    assert limiter.in_flight("acme", "wait") == 1


def test_lease_as_context_manager_releases_on_error() -> None:
    limiter = ConcurrencyLimiter()
    lease = limiter.acquire("acme", "stream", 1)
    assert lease is not None

    def handler() -> None:
        with lease:
            assert limiter.in_flight("acme", "stream") == 1
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        handler()
    assert limiter.in_flight("acme", "stream") == 0


def test_tenants_and_kinds_are_counted_apart() -> None:
    limiter = ConcurrencyLimiter()
    assert limiter.acquire("acme", "stream", 1) is not None
    assert limiter.acquire("acme", "stream", 1) is None
    assert limiter.acquire("acme", "unary", 1) is not None
    assert limiter.acquire("acme", "wait", 1) is not None
    assert limiter.acquire("globex", "stream", 1) is not None
    assert limiter.total_in_flight() == 4


@pytest.mark.parametrize("cap", [0, None], ids=["zero", "none"])
def test_zero_or_none_cap_is_unlimited(cap: int | None) -> None:
    limiter = ConcurrencyLimiter()
    leases = [limiter.acquire("acme", "unary", cap) for _ in range(1000)]
    assert None not in leases
    assert limiter.in_flight("acme", "unary") == 1000


def test_lowered_cap_applies_to_new_acquires_only() -> None:
    limiter = ConcurrencyLimiter()
    held = [limiter.acquire("acme", "stream", 5) for _ in range(3)]
    assert limiter.acquire("acme", "stream", 2) is None  # 3 in flight, cap now 2
    for lease in held[:2]:
        assert lease is not None
        lease.release()
    assert limiter.acquire("acme", "stream", 2) is not None


def test_idle_counters_are_dropped() -> None:
    limiter = ConcurrencyLimiter()
    for i in range(100):
        lease = limiter.acquire(f"tenant-{i}", "unary", 1)
        assert lease is not None
        lease.release()
    assert limiter._in_flight == {}


@pytest.mark.parametrize(
    ("kind", "cap", "field"),
    [
        pytest.param("batch", 1, "kind", id="unknown-kind"),
        pytest.param("unary", -1, "cap", id="negative-cap"),
    ],
)
def test_bad_arguments_name_the_field(kind: str, cap: int, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        ConcurrencyLimiter().acquire("acme", kind, cap)  # type: ignore[arg-type]
