"""The edge: who is calling, may they call this endpoint, within which limits, with which Launch key.

`Edge` is one loaded tenant configuration (tenants, task-handle secrets, the tenants' Launch keys).
A reload builds a new one and swaps it in; an RPC keeps the Edge it started with. `Gate` makes the
per-RPC decisions against it, in this order, so that a caller learns no more than it may:

1. identify: an API key (`authorization: Bearer`, or `x-api-key`) or a client certificate names a
   tenant; none -> UNAUTHENTICATED. In open mode (`Edge.open`: said by `auth.open`, or no config
   file at all; never just an empty tenant list) every caller is accepted (local use).
2. authorize: the endpoint must match one of the tenant's names or patterns -> PERMISSION_DENIED.
3. limit: token buckets per tenant and per tenant and endpoint -> RESOURCE_EXHAUSTED with a retry
   delay; then a concurrency slot of the RPC's kind -> RESOURCE_EXHAUSTED at once, never a queue
   (with a short retry delay, `CAP_RETRY_DELAY`).
   As in Envoy, the buckets are checked one after the other and a call refused by a later one has
   still spent its token in the earlier ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from launch_gateway.server.access.callbacks import check_addresses, check_policy, parse_callback_url
from launch_gateway.server.access.credentials import Credential, credential_for_key
from launch_gateway.server.access.handles import TaskHandles, parse_secrets
from launch_gateway.server.access.lookups import HostLookups
from launch_gateway.server.access.tenants import Subject, Tenant, TenantDirectory
from launch_gateway.server.errors import (
    ConfigError,
    LimitExceeded,
    PermissionDenied,
    Unauthenticated,
)
from launch_gateway.server.headers import Metadata, presented_api_key
from launch_gateway.server.limits.buckets import Decision, Rate, RateLimiter
from launch_gateway.server.limits.concurrency import ConcurrencyLimiter, Kind, Lease
from launch_gateway.server.observability.telemetry import Telemetry
from launch_gateway.server.settings import Settings

log = logging.getLogger("launch_gateway")

# A cap frees when one of the tenant's own calls ends, which the gateway cannot foresee: a second keeps
# a client that honours RetryInfo from retrying in a tight loop, and is short next to most calls.
CAP_RETRY_DELAY = 1.0
T = TypeVar("T")


@dataclass(frozen=True)
class Edge:
    """One loaded tenant configuration; immutable, swapped whole on reload."""

    tenants: TenantDirectory
    handles: TaskHandles | None  # None: task ids pass through unsigned (open mode without secrets)
    open: bool  # open mode: every caller accepted without a key (Settings.open_mode)
    open_auth: str  # upstream auth in open mode: "service" or "forward"
    service_keys: Mapping[str, str | None]  # tenant name ("" in open mode) -> its Launch key

    def __repr__(self) -> str:
        return f"Edge(tenants={sorted(self.tenants.tenants)}, open={self.open}, handles={self.handles is not None})"


def _secret(path: str, env_name: str, env: Mapping[str, str], where: str, problems: list[str]) -> str | None:
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            problems.append(f"{where}: cannot read {path} ({exc.strerror})")
            return None
        except UnicodeDecodeError as exc:
            problems.append(f"{where}: {path} is not valid UTF-8 (byte {exc.start}: {exc.reason})")
            return None
    return env.get(env_name) or None if env_name else None


def load_edge(settings: Settings, env: Mapping[str, str]) -> Edge:
    """The Edge for these settings; secrets come from the environment or files, never the config."""
    problems: list[str] = []
    keys: dict[str, str | None] = {"": env.get(settings.upstream.api_key_env) or None}
    for tenant in settings.tenants:
        if tenant.upstream == "service":
            where = f"tenants.{tenant.name}.upstream_key_{'file' if tenant.upstream_key_file else 'env'}"
            key = _secret(tenant.upstream_key_file, tenant.upstream_key_env, env, where, problems)
            if key is None and not any(p.startswith(where) for p in problems):
                missing = f"{tenant.upstream_key_file} is empty" if tenant.upstream_key_file else None
                problems.append(f"{where}: {missing or f'${tenant.upstream_key_env} is not set'}")
            keys[tenant.name] = key
    limits = settings.limits
    if limits.backend == "redis" and not env.get(limits.redis_url_env):
        problems.append(f"limits.redis_url_env: ${limits.redis_url_env} is not set (limits.backend = redis)")
    auth = settings.auth
    where = "auth.handle_secrets_file" if auth.handle_secrets_file else "auth.handle_secrets_env"
    raw = _secret(auth.handle_secrets_file, auth.handle_secrets_env, env, where, problems)
    handles = None
    if raw:
        try:
            handles = TaskHandles(parse_secrets(raw))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    elif settings.tenants and not any(p.startswith(where) for p in problems):
        empty = f"{auth.handle_secrets_file} is empty: " if auth.handle_secrets_file else ""
        problems.append(f"{where}: {empty}tenants need task-handle secrets (${auth.handle_secrets_env} or a file)")
    if settings.callbacks.public_url and handles is None and not any(p.startswith(where) for p in problems):
        why = f"its callback URLs are signed with the task-handle secrets: set ${auth.handle_secrets_env} or a file"
        problems.append(f"callbacks.public_url: {why} ({where})")
    if problems:
        raise ConfigError(problems)
    return Edge(TenantDirectory(settings.tenants), handles, settings.open_mode, settings.upstream.auth, keys)


@dataclass(frozen=True)
class Caller:
    """Who an RPC is from, and the credential its upstream requests carry."""

    tenant: Tenant | None  # None in open mode
    credential: Credential

    @property
    def name(self) -> str:
        return self.tenant.name if self.tenant else ""


@dataclass
class Admission:
    """What the limits decided for one RPC: headers to send, and a slot to give back at the end."""

    headers: tuple[tuple[str, str], ...] = ()
    lease: Lease | None = None

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()


def rate_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """The RateLimit-* headers (draft-ietf-httpapi-ratelimit-headers) as gRPC metadata."""
    return (
        ("ratelimit-limit", str(decision.limit)),
        ("ratelimit-remaining", str(decision.remaining)),
        ("ratelimit-reset", str(math.ceil(decision.reset_after))),
    )


class Gate:
    """Identifies, authorizes and limits each RPC (see the module docstring)."""

    def __init__(
        self, limiter: RateLimiter, concurrency: ConcurrencyLimiter, telemetry: Telemetry, lookups: HostLookups
    ) -> None:
        self._lookups = lookups  # callback hosts are resolved there, never on the upstream's resolver
        self._limiter = limiter
        self._concurrency = concurrency
        self._telemetry = telemetry

    def identify(self, edge: Edge, metadata: Metadata | None, subjects: Sequence[Subject]) -> Caller:
        key = presented_api_key(metadata)
        if edge.open:
            if edge.open_auth == "forward":
                if key is None:
                    raise Unauthenticated(
                        "authorization: this gateway forwards the caller's Launch API key; "
                        "send metadata 'authorization: Bearer <key>'",
                        reason="API_KEY_MISSING",
                    )
                return Caller(None, credential_for_key(key))
            return Caller(None, credential_for_key(edge.service_keys.get("")))
        tenant = edge.tenants.by_key(key) if key else None
        if tenant is None and key is None:
            tenant = edge.tenants.by_subjects(subjects)
        if tenant is None:
            if key is None:
                self._telemetry.auth_failure("missing_key")
                raise Unauthenticated(
                    "authorization: missing API key; send 'authorization: Bearer <key>'", reason="API_KEY_MISSING"
                )
            self._telemetry.auth_failure("unknown_key")
            raise Unauthenticated("authorization: unknown API key", reason="API_KEY_UNKNOWN")
        if tenant.upstream == "service":
            return Caller(tenant, credential_for_key(edge.service_keys.get(tenant.name)))
        if key is None:  # known by its certificate, but forward mode needs a Launch key to pass on
            raise Unauthenticated(
                "authorization: this tenant forwards its Launch API key; send it as a Bearer token",
                reason="API_KEY_MISSING",
            )
        return Caller(tenant, credential_for_key(key))

    @staticmethod
    def allowed(caller: Caller, endpoints: Sequence[T], name: Callable[[T], str]) -> list[T]:
        """Of `endpoints`, those the caller may call (ListEndpoints shows no others); all in open mode."""
        tenant = caller.tenant
        return list(endpoints) if tenant is None else [e for e in endpoints if tenant.may_call(name(e))]

    def authorize(self, caller: Caller, endpoint: str) -> None:
        if caller.tenant is not None and not caller.tenant.may_call(endpoint):
            self._telemetry.auth_failure("endpoint_denied")
            raise PermissionDenied(
                f"endpoint {endpoint!r} is not allowed for tenant {caller.tenant.name!r}", reason="ENDPOINT_NOT_ALLOWED"
            )

    async def limit(self, caller: Caller, endpoint: str | None, kind: Kind) -> Admission:
        """Spend rate tokens and take a concurrency slot, or raise RESOURCE_EXHAUSTED."""
        tenant = caller.tenant
        if tenant is None:
            return Admission()
        checks: list[tuple[str, Rate, str]] = []  # (bucket key, rate, what a refusal names)
        if tenant.rate is not None:
            checks.append((f"t:{tenant.name}", tenant.rate, ""))
        matched = tenant.endpoint_rate(endpoint) if endpoint else None
        if matched is not None:
            checks.append((f"t:{tenant.name}:e:{matched[0]}", matched[1], f" on endpoint {endpoint!r}"))
        tightest: Decision | None = None
        for key, rate, scope in checks:
            decision = await self._limiter.check(key, rate)
            result = (
                ("allowed" if decision.allowed else "limited")
                if not decision.degraded
                else ("failed_open" if decision.allowed else "failed_closed")
            )
            self._telemetry.rate_decision(tenant.name, result)
            if not decision.allowed and decision.degraded:
                raise LimitExceeded(
                    "the rate limiter is unavailable and the gateway fails closed; retry later",
                    retry_after=decision.retry_after,
                    reason="RATE_LIMITER_UNAVAILABLE",
                )
            if not decision.allowed:
                raise LimitExceeded(
                    f"rate limit exceeded for tenant {tenant.name!r}{scope} "
                    f"({rate.per_second:g}/s, burst {rate.burst}); retry after {decision.retry_after:.2f} s",
                    retry_after=decision.retry_after,
                    metadata={
                        "scope": "endpoint" if scope else "tenant",
                        "per_second": f"{rate.per_second:g}",
                        "burst": str(rate.burst),
                    },
                )
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        cap = {"unary": tenant.max_unary, "stream": tenant.max_streams, "wait": tenant.max_waits}[kind]
        lease = self._concurrency.acquire(tenant.name, kind, cap)
        if lease is None:
            noun = {"unary": "unary calls", "stream": "open streams", "wait": "waiting WaitAsyncTask calls"}[kind]
            raise LimitExceeded(
                f"tenant {tenant.name!r} is at its cap of {cap} {noun}",
                retry_after=CAP_RETRY_DELAY,
                reason="CONCURRENCY_CAP",
                metadata={"kind": kind, "cap": str(cap)},
            )
        return Admission(rate_headers(tightest) if tightest else (), lease)

    async def check_callback(self, tenant: Tenant | None, url: str) -> None:
        """Apply the tenant's callback policy to `url` (see access.callbacks); open mode (None) has none."""
        if tenant is None:
            return
        policy = tenant.callbacks
        target = parse_callback_url(url)
        check_policy(target, policy)  # nothing is resolved for a refused host
        if policy.allow_private:
            return
        if target.address is not None:
            addresses = [target.host]
        else:
            addresses = await self._lookups.resolve(tenant.name, target.host, target.port)
        check_addresses(target, addresses)
