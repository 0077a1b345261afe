"""Task handles: the `task_id` callers see, bound to the tenant and endpoint that created the task.

A handle is `t1.<payload>.<mac>`: the payload (base64url JSON of tenant, endpoint and the upstream's
task id) signed with HMAC-SHA256, both in unpadded base64url with exactly one spelling: anything else
is not a handle, so a handle cannot be respelled into another string that verifies. Nothing is
stored, so every replica that shares the secrets can serve any handle. The first secret signs; every
listed secret verifies, so a secret is rotated by putting the new one first and dropping the old one
once its handles have expired from use.
The same seal signs other texts the gateway hands out and must get back unchanged (the callback URLs
of `upstream.task_callbacks`), each under its own version prefix, which is part of what is signed.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launch_gateway.server.errors import InvalidArgument

VERSION = "t1"
MAX_HANDLE_LENGTH = 4096


@dataclass(frozen=True)
class TaskRef:
    """What a handle says: whose task, on which endpoint, and its id upstream."""

    tenant: str
    endpoint: str
    upstream_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _unb64(text: str) -> bytes:
    """Strict unpadded base64url: one spelling per value, so a handle cannot be respelled.

    The decoder alone is loose (it skips characters outside the alphabet, accepts any padding and
    ignores the spare bits of the last character), so the text must also be exactly what encoding
    the decoded bytes gives back.
    """
    if not _B64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical base64url of its bytes")
    return data


class TaskHandles:
    """Issues and verifies handles under a list of secrets (the first one signs)."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets or any(len(s) < 16 for s in secrets):
            raise ValueError("task handle secrets must be at least 16 bytes each, and at least one is needed")
        self._secrets = tuple(secrets)

    def __repr__(self) -> str:
        return f"TaskHandles({len(self._secrets)} secrets)"

    def _mac(self, secret: bytes, version: str, payload: str) -> bytes:
        return hmac.new(secret, f"{version}.{payload}".encode(), hashlib.sha256).digest()

    def seal(self, version: str, values: Sequence[str | int]) -> str:
        """`<version>.<payload>.<mac>`: `values` as base64url JSON, signed by the first secret. The
        version is part of what is signed, so a text sealed for one use never opens as another."""
        payload = _b64(json.dumps(list(values), separators=(",", ":")).encode())
        return f"{version}.{payload}.{_b64(self._mac(self._secrets[0], version, payload))}"

    def unseal(self, version: str, text: str, max_length: int = MAX_HANDLE_LENGTH) -> list[Any] | None:
        """The values `seal(version, ...)` signed with any of the secrets, or None for anything else."""
        parts = text.split(".") if len(text) <= max_length else []
        if len(parts) != 3 or parts[0] != version:
            return None
        _, payload, mac_text = parts
        try:
            mac = _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        valid = False
        for secret in self._secrets:  # no early exit
            valid |= hmac.compare_digest(mac, self._mac(secret, version, payload))
        if not valid:
            return None
        try:
            values = json.loads(_unb64(payload))
        except (ValueError, TypeError, binascii.Error):
            return None
        return values if isinstance(values, list) else None

    def issue(self, ref: TaskRef) -> str:
        return self.seal(VERSION, (ref.tenant, ref.endpoint, ref.upstream_id))

    def verify(self, handle: str) -> TaskRef:
        """The handle's TaskRef; INVALID_ARGUMENT for anything this gateway did not issue."""
        values = self.unseal(VERSION, handle)
        if values is None or len(values) != 3:
            raise InvalidArgument("task_id", "not a task handle issued by this gateway", reason="TASK_HANDLE_INVALID")
        tenant, endpoint, upstream_id = values
        return TaskRef(str(tenant), str(endpoint), str(upstream_id))


def parse_secrets(text: str) -> list[bytes]:
    """Secrets from an environment variable (comma-separated) or a file (one per line)."""
    return [s.strip().encode() for s in text.replace("\n", ",").split(",") if s.strip()]
