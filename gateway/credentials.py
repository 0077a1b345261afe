"""Which Launch credential an RPC's upstream requests carry (the `upstream.auth` setting).

- `service`: the gateway's own Launch key, read once at start from the environment variable
  `upstream.api_key_env`; every call uses it. With no key set, requests go without credentials
  (fine for the local Launch server, which then accepts anyone).
- `forward`: the caller's own Launch key from its `authorization` metadata; a call without one is
  UNAUTHENTICATED before anything goes upstream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.errors import Unauthenticated
from gateway.metadata import Metadata, basic_authorization, key_from_authorization, metadata_value


@dataclass(frozen=True)
class Credential:
    """An upstream Authorization header and the scope it belongs to (for per-caller caches)."""

    authorization: str | None
    scope: str  # a short digest of the key: never the key itself

    def __repr__(self) -> str:
        return f"Credential(scope={self.scope!r})"


def _scope(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class UpstreamCredentials:
    """Chooses the credential for a call from the mode and the call's metadata."""

    def __init__(self, mode: str, service_key: str | None) -> None:
        if mode not in ("service", "forward"):
            raise ValueError(f"unknown upstream auth mode {mode!r}")
        self.mode = mode
        self._service = Credential(
            basic_authorization(service_key) if service_key else None, _scope(service_key or "")
        )

    def __repr__(self) -> str:
        return f"UpstreamCredentials(mode={self.mode!r})"

    def for_call(self, metadata: Metadata | None) -> Credential:
        if self.mode == "service":
            return self._service
        key = key_from_authorization(metadata_value(metadata, "authorization"))
        if key is None:
            raise Unauthenticated(
                "authorization: this gateway forwards the caller's Launch API key; "
                "send metadata 'authorization: Bearer <key>'"
            )
        return Credential(basic_authorization(key), _scope(key))
