"""Upstream credentials: the Authorization header an RPC's Launch requests carry.

Launch authenticates with HTTP Basic, the API key as user name. Which key that is (the gateway's
own, a tenant's service key, or the caller's forwarded key) is decided by `launch_gateway.server.admission`; this
module only shapes it, and gives each key a scope (a short digest) for per-caller caches.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from launch_gateway.server.headers import basic_authorization


@dataclass(frozen=True)
class Credential:
    """An upstream Authorization header and the scope it belongs to (for per-caller caches)."""

    authorization: str | None
    scope: str  # a short digest of the key: never the key itself

    def __repr__(self) -> str:
        return f"Credential(scope={self.scope!r})"


@functools.lru_cache(maxsize=4096)
def credential_for_key(api_key: str | None) -> Credential:
    """The credential for a Launch key; None sends no Authorization (an open local upstream).

    Cached: it runs on every call, and hashing and encoding the same few keys again is waste.
    """
    if not api_key:
        return Credential(None, "")
    return Credential(basic_authorization(api_key), hashlib.sha256(api_key.encode()).hexdigest()[:16])
