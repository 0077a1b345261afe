"""Tenants: who may call the gateway, which endpoints, how often, and with which Launch credential.

The config file's `[tenants.<name>]` tables become `Tenant` records, read and checked by the one
validator in `settings`. API keys are stored as `sha256:<hex>` hashes (keys are long random tokens,
so a fast hash is enough and nothing in the file can be replayed); `launch-gateway hash-key` prints
the hash of a key. A presented key is hashed and compared with every stored hash in constant time,
so timing says nothing about which hash is close.
Pure: no grpc, no aiohttp.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from launch_gateway.server.limits.buckets import Rate

HASH_PREFIX = "sha256:"

# The names of a client certificate a tenant's `mtls_subjects` can be compared with: its SANs by type,
# and the subject's common name. Only DNS SANs unless the tenant lists others (`mtls_subject_types`):
# a CA that issues service names often issues email or URI names to people, and a CN is free text.
SUBJECT_TYPES = ("dns", "uri", "email", "ip", "cn")
DEFAULT_SUBJECT_TYPES = ("dns",)
Subject = tuple[str, str]  # (type, name): ("dns", "svc.example.com")
# Open streams a tenant may hold when its table sets no max_streams: each holds an upstream connection
# (of upstream.max_stream_connections) for as long as it lasts, so "unlimited" lets one tenant take them all.
DEFAULT_MAX_STREAMS = 64


def _subject_key(kind: str, name: str) -> Subject:
    return kind, name.lower() if kind == "dns" else name  # DNS names are case-insensitive


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
    mtls_subjects: tuple[str, ...] = ()  # client certificate names that mean this tenant...
    mtls_subject_types: tuple[str, ...] = DEFAULT_SUBJECT_TYPES  # ...of these types (SUBJECT_TYPES)
    endpoints: tuple[str, ...] = ()  # names or glob patterns
    upstream: Literal["forward", "service"] = "service"
    upstream_key_env: str = ""  # for "service": where the tenant's Launch key comes from
    upstream_key_file: str = ""
    rate: Rate | None = None  # for all of the tenant's calls
    endpoint_rates: Mapping[str, Rate] = field(default_factory=dict)  # by endpoint name or pattern
    max_unary: int = 0  # concurrent unary calls; 0: no cap
    max_streams: int = DEFAULT_MAX_STREAMS  # 0: no cap (upstream.max_stream_connections still bounds them all)
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
        self._subjects = {
            _subject_key(kind, s): t
            for t in self.tenants.values()
            for s in t.mtls_subjects
            for kind in t.mtls_subject_types
        }

    @property
    def has_subjects(self) -> bool:
        """Whether any tenant is known by its client certificate (else the peer is not inspected)."""
        return bool(self._subjects)

    def by_key(self, api_key: str) -> Tenant | None:
        presented = hash_key(api_key).encode()
        found: Tenant | None = None
        for stored, tenant in self._hashes:  # no early exit: every hash is compared
            if hmac.compare_digest(presented, stored):
                found = tenant
        return found

    def by_subjects(self, subjects: Iterable[Subject]) -> Tenant | None:
        """The tenant a client certificate's (type, name) pairs name; None for none, or for more than one."""
        found = {t.name: t for kind, name in subjects if (t := self._subjects.get(_subject_key(kind, name)))}
        return next(iter(found.values())) if len(found) == 1 else None
