"""Per-tenant concurrency caps: how many RPCs of each kind a tenant may have in flight at once.

Rate limits bound how often calls start; this bounds how many run together, which is what long
streams and task waits consume. Counters are per (tenant, kind), kind one of "unary", "stream"
and "wait". `acquire` either hands out a `Lease` or returns None at once when the tenant is at
its cap: there is no queue, the caller refuses with RESOURCE_EXHAUSTED. The caller looks the cap
up in the tenant's settings (a mapping kind -> cap, where 0 or None means unlimited) and passes
it in, so caps can change without touching the counters.

Pure and single-threaded (one asyncio loop): no locks, no I/O. Idle counters are deleted, so
memory follows the number of tenants with something in flight.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final, Literal, get_args

Kind = Literal["unary", "stream", "wait"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)


class Lease:
    """One in-flight slot; `release` (or leaving the `with` block) gives it back, once."""

    __slots__ = ("_limiter", "_released", "kind", "tenant")

    def __init__(self, limiter: ConcurrencyLimiter, tenant: str, kind: Kind) -> None:
        self._limiter = limiter
        self.tenant = tenant
        self.kind: Kind = kind
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the slot back; later calls do nothing."""
        if self._released:
            return
        self._released = True
        self._limiter._release(self.tenant, self.kind)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"Lease({self.tenant!r}, {self.kind!r}, {state})"


class ConcurrencyLimiter:
    """In-flight counters per (tenant, kind), checked against a cap at acquire time."""

    def __init__(self) -> None:
        self._in_flight: dict[tuple[str, Kind], int] = {}

    def acquire(self, tenant: str, kind: Kind, cap: int | None) -> Lease | None:
        """A lease if `tenant` has fewer than `cap` `kind` RPCs in flight (0/None: no cap), else None."""
        if kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
        if cap is not None and cap < 0:
            raise ValueError(f"cap: must be >= 0 (0 or None for unlimited), got {cap!r}")
        key = (tenant, kind)
        current = self._in_flight.get(key, 0)
        if cap and current >= cap:
            return None
        self._in_flight[key] = current + 1
        return Lease(self, tenant, kind)

    def in_flight(self, tenant: str, kind: Kind) -> int:
        """How many `kind` RPCs `tenant` has in flight now."""
        return self._in_flight.get((tenant, kind), 0)

    def total_in_flight(self) -> int:
        """Every lease held, all tenants and kinds (for a gauge)."""
        return sum(self._in_flight.values())

    def _release(self, tenant: str, kind: Kind) -> None:
        key = (tenant, kind)
        remaining = self._in_flight.get(key, 0) - 1
        if remaining > 0:
            self._in_flight[key] = remaining
        else:
            self._in_flight.pop(key, None)
