"""Tenants: who may call the gateway, which endpoints, how often, and with which Launch credential.

The config file's `[tenants.<name>]` tables become `Tenant` records. API keys are stored as
`sha256:<hex>` hashes (keys are long random tokens, so a fast hash is enough and nothing in the file
can be replayed); `launch-gateway hash-key` prints the hash of a key. A presented key is hashed and
compared with every stored hash in constant time, so timing says nothing about which hash is close.
Pure: no grpc, no aiohttp.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from launch_gateway.server.limits.buckets import Rate

HASH_PREFIX = "sha256:"


def hash_key(api_key: str) -> str:
    """The stored form of an API key."""
    return HASH_PREFIX + hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class CallbackPolicy:
    """Where a tenant's async tasks may POST their results."""

    hosts: tuple[str, ...] = ()  # host names or glob patterns ("*.example.com"); empty: no callbacks
    allow_http: bool = False  # https only unless true
    allow_private: bool = False  # loopback, link-local and private addresses refused unless true


@dataclass(frozen=True)
class Tenant:
    """One tenant's identity, permissions, limits and upstream credential."""

    name: str
    api_key_hashes: tuple[str, ...] = ()
    mtls_subjects: tuple[str, ...] = ()  # client certificate common names or SANs that mean this tenant
    endpoints: tuple[str, ...] = ()  # names or glob patterns
    upstream: Literal["forward", "service"] = "service"
    upstream_key_env: str = ""  # for "service": where the tenant's Launch key comes from
    upstream_key_file: str = ""
    rate: Rate | None = None  # for all of the tenant's calls
    endpoint_rates: Mapping[str, Rate] = field(default_factory=dict)  # by endpoint name or pattern
    max_unary: int = 0  # concurrent unary calls; 0: no cap
    max_streams: int = 0
    max_waits: int = 0
    callbacks: CallbackPolicy = CallbackPolicy()

    def __repr__(self) -> str:
        return f"Tenant({self.name!r})"

    def may_call(self, endpoint_name: str) -> bool:
        return any(fnmatch.fnmatchcase(endpoint_name, pattern) for pattern in self.endpoints)

    def endpoint_rate(self, endpoint_name: str) -> tuple[str, Rate] | None:
        """The (pattern, rate) that limits calls to this endpoint, if any; an exact name wins."""
        if endpoint_name in self.endpoint_rates:
            return endpoint_name, self.endpoint_rates[endpoint_name]
        for pattern, rate in self.endpoint_rates.items():
            if fnmatch.fnmatchcase(endpoint_name, pattern):
                return pattern, rate
        return None


class TenantDirectory:
    """Finds the tenant of a key or a client certificate."""

    def __init__(self, tenants: Iterable[Tenant]) -> None:
        self.tenants = {t.name: t for t in tenants}
        self._hashes = [(h.encode(), t) for t in self.tenants.values() for h in t.api_key_hashes]
        self._subjects = {s: t for t in self.tenants.values() for s in t.mtls_subjects}

    @property
    def has_subjects(self) -> bool:
        """Whether any tenant is known by its client certificate (else the peer is not inspected)."""
        return bool(self._subjects)

    @property
    def open(self) -> bool:
        """No tenants: every caller is accepted (local use only)."""
        return not self.tenants

    def by_key(self, api_key: str) -> Tenant | None:
        presented = hash_key(api_key).encode()
        found: Tenant | None = None
        for stored, tenant in self._hashes:  # no early exit: every hash is compared
            if hmac.compare_digest(presented, stored):
                found = tenant
        return found

    def by_subjects(self, subjects: Iterable[str]) -> Tenant | None:
        for subject in subjects:
            if subject in self._subjects:
                return self._subjects[subject]
        return None


# --- parsing -----------------------------------------------------------------------------------


def _strings(where: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    problems.append(f"{where}: must be a list of strings")
    return ()


def _rate(where: str, value: Any, problems: list[str]) -> Rate | None:
    if not isinstance(value, dict) or set(value) - {"per_second", "burst"}:
        problems.append(f"{where}: must be a table with per_second and burst")
        return None
    per_second, burst = value.get("per_second"), value.get("burst")
    if not isinstance(per_second, int | float) or isinstance(per_second, bool) or per_second <= 0:
        problems.append(f"{where}.per_second: must be a number greater than 0")
        return None
    if burst is None:
        burst = max(1, int(per_second))
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        problems.append(f"{where}.burst: must be an integer of at least 1")
        return None
    return Rate(float(per_second), burst)


_SCALARS: Mapping[str, type] = {
    "upstream_key_env": str,
    "upstream_key_file": str,
    "max_unary": int,
    "max_streams": int,
    "max_waits": int,
}


def parse_tenant(name: str, table: Any, problems: list[str]) -> Tenant | None:
    """A Tenant from its TOML table; every problem is appended as "tenants.<name>.<key>: reason"."""
    where = f"tenants.{name}"
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table")
        return None
    before = len(problems)
    known = {"api_key_hashes", "mtls_subjects", "endpoints", "upstream", "rate", "endpoint_rates", "callbacks"}
    problems.extend(f"{where}.{key}: unknown setting" for key in table if key not in known | set(_SCALARS))
    values: dict[str, Any] = {"name": name}
    for key in ("api_key_hashes", "mtls_subjects", "endpoints"):
        if key in table:
            values[key] = _strings(f"{where}.{key}", table[key], problems)
    for key, kind in _SCALARS.items():
        if key in table:
            value = table[key]
            negative = isinstance(value, int) and value < 0
            if not isinstance(value, kind) or isinstance(value, bool) or negative:
                problems.append(f"{where}.{key}: must be {'a non-negative integer' if kind is int else 'a string'}")
            else:
                values[key] = value
    for number, digest in enumerate(values.get("api_key_hashes", ()), 1):
        hexpart = digest.removeprefix(HASH_PREFIX)
        if not digest.startswith(HASH_PREFIX) or len(hexpart) != 64 or set(hexpart) - set("0123456789abcdef"):
            # Nothing of it is shown: what is not a hash may be the key itself, pasted by mistake.
            problems.append(
                f"{where}.api_key_hashes: entry {number} is not sha256:<64 hex> "
                "(see hash-key; the entry is not shown, it may be a key)"
            )
    if not values.get("endpoints"):
        problems.append(f'{where}.endpoints: must list at least one endpoint name or pattern ("*" for all)')
    if not values.get("api_key_hashes") and not values.get("mtls_subjects"):
        problems.append(f"{where}: needs api_key_hashes or mtls_subjects, or nobody can be this tenant")
    upstream = table.get("upstream", "service")
    if upstream not in ("forward", "service"):
        problems.append(f"{where}.upstream: must be forward or service, not {upstream!r}")
    values["upstream"] = upstream
    if upstream == "service" and not (values.get("upstream_key_env") or values.get("upstream_key_file")):
        problems.append(f"{where}.upstream_key_env: service mode needs upstream_key_env or upstream_key_file")
    if "rate" in table:
        values["rate"] = _rate(f"{where}.rate", table["rate"], problems)
    rates = table.get("endpoint_rates", {})
    if not isinstance(rates, dict):
        problems.append(f"{where}.endpoint_rates: must be a table of endpoint = {{per_second, burst}}")
        rates = {}
    parsed = {k: _rate(f"{where}.endpoint_rates.{k}", v, problems) for k, v in rates.items()}
    values["endpoint_rates"] = {k: v for k, v in parsed.items() if v is not None}
    values["callbacks"] = _callbacks(f"{where}.callbacks", table.get("callbacks", {}), problems)
    return Tenant(**values) if len(problems) == before else None


def _callbacks(where: str, table: Any, problems: list[str]) -> CallbackPolicy:
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table")
        return CallbackPolicy()
    problems.extend(f"{where}.{k}: unknown setting" for k in table if k not in ("hosts", "allow_http", "allow_private"))
    for flag in ("allow_http", "allow_private"):
        if flag in table and not isinstance(table[flag], bool):
            problems.append(f"{where}.{flag}: must be true or false")
    hosts = _strings(f"{where}.hosts", table["hosts"], problems) if "hosts" in table else ()
    return CallbackPolicy(
        tuple(h.lower() for h in hosts), table.get("allow_http") is True, table.get("allow_private") is True
    )


def parse_tenants(tables: Any, problems: list[str]) -> tuple[Tenant, ...]:
    """Every `[tenants.<name>]` table; a key hash may belong to one tenant only."""
    if not isinstance(tables, dict):
        problems.append("tenants: must be a table of [tenants.<name>] tables")
        return ()
    tenants = [t for name, table in tables.items() if (t := parse_tenant(name, table, problems))]
    owners: dict[str, str] = {}
    for tenant in tenants:
        for digest in tenant.api_key_hashes:
            if digest in owners:
                problems.append(f"tenants.{tenant.name}.api_key_hashes: a key also belongs to {owners[digest]}")
            owners[digest] = tenant.name
    return tuple(tenants)
